/* asanlab agent: answers `asanlab soak`'s sampling requests from inside every PHP process.
 *
 * Loaded with LD_PRELOAD only by `asanlab soak`. A thread in each PHP process (started again in
 * every forked child: Swoole's manager, workers and task workers) polls a trigger file in a folder
 * shared with the host. On a new sequence number it appends one line to answers.<pid>:
 *     seq pid ppid allocated_bytes heap_size profile swoole_worker_type
 * and, when asked, prints ASan's live-heap profile (allocation stacks by live bytes) into the
 * process's own sanitizer log.
 *
 * Why this design: it needs no ptrace (a debugger attached makes LeakSanitizer fail), no signal
 * (Swoole owns SIGUSR1/SIGUSR2/SIGRTMIN), no change to the app, and it sees C allocations that
 * LeakSanitizer misses in coroutine handlers, because live memory is counted whatever holds it.
 * It calls no malloc of its own between reading the counters and writing the line.
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <dlfcn.h>
#include <link.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Weak: in a build without ASan the agent still answers, with zeros. */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));
extern size_t __sanitizer_get_heap_size(void) __attribute__((weak));
extern void __sanitizer_print_memory_profile(size_t top_percent, size_t max_contexts) __attribute__((weak));

static char folder[480];
static long answered = -1; /* inherited by forked children: they answer only newer requests */

/* Whether `pid` is in a comma-separated list of PIDs. */
static int pid_listed(const char *list, int pid) {
    const char *p = list;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) return 0;
        if (v == pid) return 1;
        if (*end != ',') return 0;
        p = end + 1;
    }
}

/* The trigger: "seq profile contexts [pid,pid,...]". With a list, only the PIDs in it print a
 * profile. The host leaves out processes that fork (Swoole's master and manager): printing a
 * profile symbolizes it, which starts llvm-symbolizer with pipes that every later child inherits,
 * and two processes reading one symbolizer's answers hang each other. */
static int read_trigger(long *seq, int *profile, long *contexts) {
    char path[512], buf[4096];
    snprintf(path, sizeof path, "%s/trigger", folder);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    *contexts = 500;
    int used = 0;
    int got = sscanf(buf, "%ld %d %ld %n", seq, profile, contexts, &used);
    if (got < 2) return 0;
    if (got == 3 && *profile && used > 0 && buf[used] != 0) *profile = pid_listed(buf + used, (int)getpid());
    return 1;
}

/* Swoole's own name for this process (1 master, 2 worker, 3 manager, 4 task worker, 5 user process),
 * 0 when unknown. Only the process itself knows a task worker from an event worker: both are
 * children of the manager. swoole_get_worker_type() is exported by Swoole 6.1 and later (a C++
 * name); PHP loads extensions RTLD_GLOBAL, so it is found from here once swoole.so is loaded.
 * dlsym is tried once, after swoole.so is seen: a failed dlsym allocates its error message. */
static int (*get_worker_type)(void);
static int looked_up;

static int is_swoole(struct dl_phdr_info *info, size_t size, void *unused) {
    (void)size; (void)unused;
    const char *slash = strrchr(info->dlpi_name, '/');
    return strcmp(slash ? slash + 1 : info->dlpi_name, "swoole.so") == 0;
}

static int swoole_worker_type(void) {
    if (!looked_up && dl_iterate_phdr(is_swoole, NULL)) {
        looked_up = 1;
        get_worker_type = (int (*)(void))dlsym(RTLD_DEFAULT, "_Z22swoole_get_worker_typev");
    }
    return get_worker_type ? get_worker_type() : 0;
}

static void answer(long seq, int profile, long contexts) {
    int type = swoole_worker_type(); /* before the counters are read: the first call may allocate */
    size_t allocated = __sanitizer_get_current_allocated_bytes ? __sanitizer_get_current_allocated_bytes() : 0;
    size_t heap = __sanitizer_get_heap_size ? __sanitizer_get_heap_size() : 0;
    int profiled = 0;
    if (profile && __sanitizer_print_memory_profile) {
        /* Goes to this process's sanitizer log (log_path), after any report it already wrote. */
        __sanitizer_print_memory_profile(100, (size_t)contexts);
        profiled = 1;
    }
    char path[512], line[160];
    snprintf(path, sizeof path, "%s/answers.%d", folder, (int)getpid());
    int len = snprintf(line, sizeof line, "%ld %d %d %zu %zu %d %d\n", seq, (int)getpid(), (int)getppid(),
                       allocated, heap, profiled, type);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)len) < 0) { /* nothing to do: the host sees the answer missing */ }
        close(fd);
    }
}

/* The thread is stopped (joined) before every fork and started again on both sides. A thread
 * running in the parent at fork() stays in the child's sanitizer thread registry without existing:
 * LeakSanitizer's exit check then cannot suspend it ("Running thread N was not suspended") and
 * can crash ("LeakSanitizer has encountered a fatal error"). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int stopping;
static int running;
static pthread_t thread;

static void *poll_loop(void *unused) {
    (void)unused;
    pthread_mutex_lock(&lock);
    while (!stopping) {
        pthread_mutex_unlock(&lock);
        long seq, contexts;
        int profile;
        if (read_trigger(&seq, &profile, &contexts) && seq > answered) {
            answered = seq;
            answer(seq, profile, contexts);
        }
        pthread_mutex_lock(&lock);
        if (stopping) break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec += 1; until.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&wake, &lock, &until);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void start_thread(void) {
    pthread_attr_t attr;
    sigset_t all, old;
    stopping = 0;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    /* The thread takes no signal: Swoole blocks SIGTERM & co. in its own thread to read them from a
     * signalfd, and a thread that left them unblocked would receive them instead (lost shutdowns). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    running = pthread_create(&thread, &attr, poll_loop, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

static void before_fork(void) {
    if (!running) return;
    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    pthread_join(thread, NULL);
    running = 0;
}

static void in_child(void) {
    /* Nothing held them at fork (the thread was joined): fresh ones are equivalent and safe. */
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    start_thread();
}

static int is_php(void) {
    char exe[256];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    const char *base = strrchr(exe, '/');
    return strncmp(base ? base + 1 : exe, "php", 3) == 0;
}

__attribute__((constructor)) static void asanlab_agent_init(void) {
    const char *dir = getenv("ASANLAB_AGENT_DIR");
    /* Only PHP: shells and tools started in the container (docker exec) inherit LD_PRELOAD too. */
    if (!dir || !*dir || strlen(dir) >= sizeof folder || !is_php()) return;
    strcpy(folder, dir);
    long seq, contexts;
    int profile;
    if (read_trigger(&seq, &profile, &contexts)) answered = seq; /* answer only what is asked from now on */
    pthread_atfork(before_fork, start_thread, in_child);
    start_thread();
}
