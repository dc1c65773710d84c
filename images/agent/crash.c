/* asanlab agent: what a PHP process leaves when it dies by SIGSEGV, SIGBUS, SIGABRT, SIGILL or SIGFPE
 * in an image where no sanitizer handles that signal (the debug images for gdb and Valgrind, or an
 * ASan image's SIGILL). A core file would need the host's core_pattern, which a container cannot
 * change and which points outside it on many hosts; a handler in the process needs nothing.
 *
 * It appends to crash.<pid>, in the folder run gives (the session's raw/php):
 *   crash <pid>
 *   thread <tid>
 *   signal <number> <name>
 *   code <si_code>
 *   address <si_addr>
 *   pc <the faulting instruction>
 *   backtrace                       glibc's, from the faulting frame (symbols only where exported)
 *   <one line per frame>
 *   gdb                             when the image has gdb: gdb -p <pid> -x $ASANLAB_CRASH_GDB, whose
 *   <gdb's output>                  script prints bt full, registers, zbacktrace, co_bt
 *   end
 * and then the PHP stack block "crash <pid>" (asanlab-agent.c), last because reading PHP's data is
 * what may fault again. The process then dies by the same signal: its parent (Swoole's manager)
 * sees the usual signal=11.
 *
 * gdb attaches to a process blocked in this handler: the container has SYS_PTRACE (run gives it for
 * LeakSanitizer) and gdb runs as the same user. vfork, not fork: fork would run the atfork handlers
 * (the agent's and the app's) in a process whose state is broken. */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "crash.h"

#define GDB "/usr/bin/gdb"
#define GDB_SECONDS 120 /* gdb reads the debug information of PHP and every extension first */

static const int SIGNALS[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE};
static char dir[480];
static char script[480];
static int have_gdb;
static void (*php_block)(const char *, size_t);
static char alternate_stack[64 * 1024]; /* a stack overflow leaves no stack to handle it on */

static void put(int fd, const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static const char *name_of(int sig) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    }
    return "?";
}

static void *faulting_pc(void *context) {
    ucontext_t *uc = context;
#if defined(__x86_64__)
    return (void *)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (void *)uc->uc_mcontext.pc;
#else
    (void)uc;
    return NULL;
#endif
}

static void run_gdb(int fd, pid_t pid, pid_t tid) {
    char pid_arg[32], tid_arg[64];
    snprintf(pid_arg, sizeof pid_arg, "%d", (int)pid);
    snprintf(tid_arg, sizeof tid_arg, "set $asanlab_tid = %d", (int)tid);
    char *argv[] = {"gdb", "-nx", "-batch", "-p", pid_arg, "-ex", tid_arg, "-x", script, NULL};
    /* Not the app's environment: LD_PRELOAD and the sanitizers' options are not gdb's. */
    char *envp[] = {"PATH=/usr/bin:/bin", "HOME=/tmp", "TERM=dumb", "LANG=C.UTF-8", NULL};
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0); /* Yama, on kernels that have it */
    pid_t child = vfork();
    if (child == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execve(GDB, argv, envp);
        _exit(127);
    }
    if (child < 0) {
        put(fd, "asanlab: gdb could not be started\n");
        return;
    }
    struct timespec nap = {0, 50 * 1000 * 1000};
    for (int naps = 0;; naps++) {
        int status;
        pid_t r = waitpid(child, &status, WNOHANG);
        if (r == child || (r < 0 && errno != EINTR)) return;
        if (naps == GDB_SECONDS * 20) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            put(fd, "asanlab: gdb did not finish in time and was stopped\n");
            return;
        }
        nanosleep(&nap, NULL);
    }
}

static void on_crash(int sig, siginfo_t *info, void *context) {
    /* SA_RESETHAND: the action is the default again, so a second fault in here ends the process. */
    int saved_errno = errno;
    pid_t pid = getpid(), tid = (pid_t)syscall(SYS_gettid);
    char path[512], line[256];
    snprintf(path, sizeof path, "%s/crash.%d", dir, (int)pid);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        void *pc = faulting_pc(context);
        snprintf(line, sizeof line, "crash %d\nthread %d\nsignal %d %s\ncode %d\naddress %p\npc %p\nbacktrace\n",
                 (int)pid, (int)tid, sig, name_of(sig), info->si_code, info->si_addr, pc);
        put(fd, line);
        void *frames[64];
        int n = backtrace(frames, 64), first = 0;
        for (int i = 0; i < n; i++) { /* this handler's frames and the kernel's trampoline: not the crash */
            if (frames[i] == pc) {
                first = i;
                break;
            }
        }
        backtrace_symbols_fd(frames + first, n - first, fd);
        if (have_gdb) {
            put(fd, "gdb\n");
            run_gdb(fd, pid, tid);
        }
        put(fd, "end\n");
        close(fd);
    }
    if (php_block) { /* it writes nothing outside PHP's own thread */
        int k = snprintf(line, sizeof line, "crash %d", (int)pid);
        php_block(line, (size_t)k);
    }
    errno = saved_errno;
    /* A fault happens again on return, now with the default action. A signal sent (kill, abort's
     * raise) is sent again: it is blocked in here, so it ends the process on return. */
    if (info->si_code <= 0 || sig == SIGABRT) raise(sig);
}

void crash_start(const char *folder, void (*block)(const char *, size_t)) {
    const char *gdb_script = getenv("ASANLAB_CRASH_GDB");
    if (!folder || strlen(folder) >= sizeof dir) return;
    strcpy(dir, folder);
    php_block = block;
    have_gdb = gdb_script && strlen(gdb_script) < sizeof script && access(GDB, X_OK) == 0;
    if (have_gdb) strcpy(script, gdb_script);
    int installed = 0;
    for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(SIGNALS[i], NULL, &old) != 0) continue;
        /* A sanitizer's handler (ASan's SEGV report) or the app's own stays. */
        if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_crash;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGNALS[i], &sa, NULL) == 0) installed++;
    }
    if (!installed) return;
    void *warm[4];
    backtrace(warm, 4); /* loads the unwinder now: its first use allocates, which a handler must not */
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && (current.ss_flags & SS_DISABLE)) {
        stack_t ss = {.ss_sp = alternate_stack, .ss_size = sizeof alternate_stack, .ss_flags = 0};
        sigaltstack(&ss, NULL);
    }
}
