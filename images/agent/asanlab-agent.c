/* asanlab agent: inside every PHP process `asanlab run` and `asanlab soak` start.
 *
 * 1. The PHP side of every AddressSanitizer error and UBSan report (ASANLAB_PHP_TRACE_DIR set, by run
 *    and soak): ASan calls back after printing a report (UBSan, through the death callback); the
 *    agent appends the PHP call stack running at that moment (function, file:line per frame, as
 *    php-src's zbacktrace walks it) and the HTTP request a Swoole handler was serving to
 *    php-backtrace.<pid> in that folder. Swoole swaps
 *    EG(current_execute_data) per coroutine, so this is the coroutine that failed.
 *    A crash by a signal no sanitizer handles (SIGSEGV in an image without ASan, ...) leaves
 *    crash.<pid> there with the C stack (gdb's where the image has gdb) and the PHP block (crash.c).
 * 2. The PHP code that allocated each block still alive at exit (ASANLAB_PHP_ORIGINS=1, by run):
 *    php-origin.<pid> in the same folder, joined on the host with LeakSanitizer's leaked objects.
 * 3. Soak sampling (ASANLAB_AGENT_DIR set, by soak only): a thread in each PHP process (started
 * again in every forked child: Swoole's manager, workers and task workers) polls a trigger file the
 * host writes (ASANLAB_AGENT_TRIGGER, in a read-only mount). On a new sequence number it appends one
 * line to answers.<pid> in the folder it shares with the host:
 *     seq pid ppid allocated_bytes heap_size profile swoole_worker_type
 * and, when asked, prints ASan's live-heap profile (allocation stacks by live bytes) into the
 * process's own sanitizer log, and the live heap by the PHP code that allocated it into
 * php-heap.<pid> (php-heap.c).
 *
 * Why this design: it needs no ptrace (a debugger attached makes LeakSanitizer fail), no signal
 * (Swoole owns SIGUSR1/SIGUSR2/SIGRTMIN), no change to the app, and it sees C allocations that
 * LeakSanitizer misses in coroutine handlers, because live memory is counted whatever holds it.
 * It calls no malloc of its own between reading the counters and writing the line.
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "crash.h"
#include "php-census.h"
#include "php-heap.h"
#include "php-origin.h"

#include "agent-php.h"

/* Weak: in a build without ASan the agent still answers, with zeros. */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));
extern size_t __sanitizer_get_heap_size(void) __attribute__((weak));
extern void __sanitizer_print_memory_profile(size_t top_percent, size_t max_contexts) __attribute__((weak));

static char folder[480];
static long answered = -1; /* inherited by forked children: they answer only newer requests */

/* The run's deadline, kept inside the container (ASANLAB_DEADLINE, seconds since the epoch, set by
 * `asanlab run --timeout`, later than asanlab's own stop): if asanlab was killed, PID 1 sends itself
 * SIGTERM then (the app's handler, or asanlab's sigterm.php, exits normally: leak reports are
 * written), and exits after ASANLAB_DEADLINE_GRACE more seconds if it has not. Only PID 1: when it
 * exits, the kernel ends every other process of the container. */
static double deadline, hard_deadline;
static int termed;

static void check_deadline(void) {
    if (deadline <= 0 || getpid() != 1) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double t = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    if (t >= hard_deadline) _exit(137);
    if (t >= deadline && !termed) {
        termed = 1;
        kill(1, SIGTERM);
    }
}

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

/* The sampling thread's two channels are opened once and kept, so that an app leaking descriptors
 * until open() fails with EMFILE is still sampled (that leak is what the soak has to measure):
 * - the trigger, in a folder the host writes and the app cannot (a read-only mount): opened as the
 *   agent starts, before the app opens anything, and read in place with pread (forked children share
 *   it: pread moves no offset). The host overwrites it in place with a fixed-size record;
 * - answers.<pid>, appended to: opened as each process's thread starts (a forked child closes its
 *   parent's and opens its own).
 * One more descriptor is held in reserve, traded for either channel when it could not be opened at
 * start (a child forked when its parent was already out of descriptors). The app can take that slot
 * between our close and open: that channel then stays shut. The live-heap dump and the census, opened
 * per profile, get no reserve: out of descriptors, a profile has the sanitizer's part only. */
static int spare = -1;
static char trigger_path[480];
static int trigger_fd = -1;
static int answers_fd = -1;
static int answers_pid;

static int open_own(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd < 0 && errno == EMFILE && spare >= 0) {
        close(spare);
        spare = -1;
        fd = open(path, flags, 0644);
    }
    return fd;
}

static void open_answers(void) {
    if (answers_pid == (int)getpid()) return;
    if (answers_fd >= 0) close(answers_fd); /* the parent's, inherited at fork */
    char path[512];
    snprintf(path, sizeof path, "%s/answers.%d", folder, (int)getpid());
    answers_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    answers_pid = (int)getpid();
}

/* The trigger: "seq profile contexts pids seq\n", padded with spaces to a fixed size, where pids
 * is "-" or a comma-separated list: then only the PIDs in it print a profile. The host leaves out
 * processes that fork (Swoole's master and manager): printing a profile symbolizes it, which starts
 * llvm-symbolizer with pipes that every later child inherits, and two processes reading one
 * symbolizer's answers hang each other. The sequence number ends the line too: a read that met the
 * host's write half done has two different ones (or no newline) and is taken as no request. */
static int read_trigger(long *seq, int *profile, long *contexts) {
    char buf[4096];
    if (trigger_fd < 0) trigger_fd = open_own(trigger_path, O_RDONLY | O_CLOEXEC);
    if (trigger_fd < 0) return 0;
    ssize_t n = pread(trigger_fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *eol = strchr(buf, '\n');
    if (!eol) return 0;
    *eol = 0;
    int used = 0;
    if (sscanf(buf, "%ld %d %ld %n", seq, profile, contexts, &used) < 3 || used <= 0) return 0;
    char *list = buf + used, *gap = strchr(list, ' ');
    if (!gap) return 0;
    *gap = 0;
    char *end;
    long last = strtol(gap + 1, &end, 10);
    if (end == gap + 1 || *end != 0 || last != *seq) return 0;
    if (*profile && strcmp(list, "-") != 0) *profile = pid_listed(list, (int)getpid());
    return 1;
}

/* Swoole's own name for this process (1 master, 2 worker, 3 manager, 4 task worker, 5 user process),
 * 0 when unknown. Only the process itself knows a task worker from an event worker: both are
 * children of the manager. swoole_get_worker_type() is exported by Swoole 6.1 and later (a C++
 * name); PHP loads extensions RTLD_GLOBAL, so it is found from here once swoole.so is loaded.
 * dlsym is tried once, after swoole.so is seen: a failed dlsym allocates its error message. */
static int (*get_worker_type)(void);
/* swoole_coroutine_count(): the coroutines alive in this process (exported for gdb by Swoole 5.1,
 * 6.1 and 6.2). Read from this thread while PHP runs: a size read, at worst one switch stale. */
static size_t (*get_coroutine_count)(void);
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
        get_coroutine_count = (size_t (*)(void))dlsym(RTLD_DEFAULT, "_Z22swoole_coroutine_countv");
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
    if (profile) {
        char heap_path[512];
        snprintf(heap_path, sizeof heap_path, "%s/php-heap.%d", folder, (int)getpid());
        php_heap_dump(heap_path, seq);
        php_census_request(seq);
    }
    char line[160];
    int len = snprintf(line, sizeof line, "%ld %d %d %zu %zu %d %d", seq, (int)getpid(), (int)getppid(),
                       allocated, heap, profiled, type);
    if (get_coroutine_count && len > 0 && len < (int)sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, " %zu", get_coroutine_count());
    if (len > 0 && len < (int)sizeof line - 1) line[len++] = '\n';
    if (answers_fd < 0) {
        char path[512];
        snprintf(path, sizeof path, "%s/answers.%d", folder, (int)getpid());
        answers_fd = open_own(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC);
    }
    if (answers_fd >= 0 && write(answers_fd, line, (size_t)len) < 0) {
        /* nothing to do: the host sees the answer missing */
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

/* Once the process exits, the thread answers no more: a profile printed while LeakSanitizer's exit
 * check wrote its report went into the middle of it, and the process hung there (a Swoole worker
 * leaving at max_request as a soak checkpoint asked it for a profile stayed alive, silent, until the
 * server stopped). The check is an atexit handler ASan registers as the program starts; exit runs
 * handlers last registered first, but one registered by a preloaded library's constructor ran
 * after it (glibc 2.36): the agent registers its own at its first answer, long after main began. */
static pthread_mutex_t answering = PTHREAD_MUTEX_INITIALIZER;
static int exiting;
static int exit_hooked;

static void stop_answering(void) {
    pthread_mutex_lock(&answering); /* an answer being written ends first */
    exiting = 1;
    pthread_mutex_unlock(&answering);
}

static void *poll_loop(void *unused) {
    (void)unused;
    pthread_mutex_lock(&lock);
    while (!stopping) {
        pthread_mutex_unlock(&lock);
        long seq, contexts;
        int profile;
        if (folder[0] && read_trigger(&seq, &profile, &contexts) && seq > answered) {
            pthread_mutex_lock(&answering);
            if (!exit_hooked) exit_hooked = atexit(stop_answering) == 0; /* inherited by forked children */
            if (!exiting) {
                answered = seq;
                answer(seq, profile, contexts);
            }
            pthread_mutex_unlock(&answering);
        }
        check_deadline();
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
    if (folder[0]) {
        open_answers();
        if (spare < 0) spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
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

/* The agent's one pthread_atfork: its thread joined and every table quiesced before the fork. */
static void before_fork(void) {
    if (running) {
        pthread_mutex_lock(&lock);
        stopping = 1;
        pthread_cond_signal(&wake);
        pthread_mutex_unlock(&lock);
        pthread_join(thread, NULL);
        running = 0;
    }
    php_heap_fork_prepare();
}

static void in_parent(void) {
    php_heap_fork_parent();
    start_thread();
}

static void in_child(void) {
    /* Nothing held them at fork (the thread was joined): fresh ones are equivalent and safe. */
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_mutex_init(&answering, NULL);
    if (!folder[0]) return; /* the deadline is PID 1's alone */
    php_heap_child();
    php_census_child(folder);
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

/* ---- 1. the PHP backtrace of each ASan error ------------------------------------------------ */
extern void __asan_set_error_report_callback(void (*callback)(const char *)) __attribute__((weak));
/* UBSan has no report callback a preloaded library can set (its hook is bound inside the php
 * binary), but asanlab builds UBSan without recovery: its first report ends the process through the
 * sanitizers' common Die(), which calls this. */
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void put(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void put_str(int fd, const char *s) { put(fd, s, strlen(s)); }

#if defined(ASANLAB_WITH_PHP) && !defined(ZTS)
static char trace_dir[480];
/* Found with dlsym, never linked: the agent is preloaded into non-PHP programs too (the symbolizer,
 * shells), where a reference to PHP's symbols would stop them from starting. */
static zend_executor_globals *eg;
static zval *(*read_property)(zend_class_entry *, zend_object *, const char *, size_t, bool, zval *);
static zval *(*hash_str_find)(const HashTable *, const char *, size_t);

/* `$request->server[key]` of a Swoole\Http\Request, or NULL. */
static const char *request_field(zend_object *request, const char *key) {
    zval rv;
    zval *server = read_property(request->ce, request, "server", sizeof "server" - 1, 1, &rv);
    if (!server || Z_TYPE_P(server) != IS_ARRAY) return NULL;
    zval *v = hash_str_find(Z_ARRVAL_P(server), key, strlen(key));
    return v && Z_TYPE_P(v) == IS_STRING ? Z_STRVAL_P(v) : NULL;
}

/* A Swoole\WebSocket\Frame (or its CloseFrame) as the request a handler serves: its connection
 * and the start of its data, non-printable bytes as '.', written as it is read (no allocation). */
static int websocket_frame(zend_object *frame) {
    const char *name = ZSTR_VAL(frame->ce->name);
    return strcmp(name, "Swoole\\WebSocket\\Frame") == 0 || strcmp(name, "Swoole\\WebSocket\\CloseFrame") == 0;
}

static void put_websocket_frame(int fd, zend_object *frame) {
    zval rv_fd, rv_data;
    zval *conn = read_property(frame->ce, frame, "fd", sizeof "fd" - 1, 1, &rv_fd);
    zval *data = read_property(frame->ce, frame, "data", sizeof "data" - 1, 1, &rv_data);
    char line[64];
    put_str(fd, "request WebSocket message");
    if (conn && Z_TYPE_P(conn) == IS_LONG) {
        snprintf(line, sizeof line, " on connection %ld", (long)Z_LVAL_P(conn));
        put_str(fd, line);
    }
    if (data && Z_TYPE_P(data) == IS_STRING) {
        size_t n = Z_STRLEN_P(data), shown = n < 64 ? n : 64;
        snprintf(line, sizeof line, ", %zu byte(s): \"", n);
        put_str(fd, line);
        for (size_t i = 0; i < shown; i++) {
            char c = Z_STRVAL_P(data)[i];
            put(fd, c >= 0x20 && c < 0x7f && c != '"' ? &c : ".", 1);
        }
        put_str(fd, shown < n ? "\"..." : "\"");
    }
    put_str(fd, "\n");
}

/* The Swoole coroutine running now (> 0), or -1 outside one, 0 without Swoole. Found when first
 * needed: swoole.so is loaded after the agent starts. Swoole 6 names it swoole_coroutine_get_id,
 * 5.1 swoole_coroutine_get_current_id (C names, for gdb and C callers). */
static long current_coroutine(int in_signal) {
    static long (*get_id)(void);
    static int tried;
    /* In a signal handler only what was looked up before is used: dlsym may allocate, and the
     * signal may have come inside malloc with its lock held. */
    if (!tried && !in_signal && dl_iterate_phdr(is_swoole, NULL)) {
        tried = 1;
        get_id = (long (*)(void))dlsym(RTLD_DEFAULT, "swoole_coroutine_get_id");
        if (!get_id) get_id = (long (*)(void))dlsym(RTLD_DEFAULT, "swoole_coroutine_get_current_id");
    }
    return get_id ? get_id() : 0;
}

/* Called by ASan with the whole report, after printing it. One block per report:
 *   report <the report's ERROR line, verbatim>
 *   frame <function>\t<file>\t<line>      innermost first; internal functions have no file
 *   coroutine <id>                         in a Swoole coroutine
 *   request <method> <uri>                 when a frame got a Swoole\Http\Request argument
 *   request WebSocket message ...          or a Swoole\WebSocket\Frame (its connection and data)
 *   end
 * It allocates nothing: the heap may be what just failed. */
static void write_block(const char *key, size_t key_length, int in_signal);

static void php_backtrace(const char *report) {
    const char *error = strstr(report, "ERROR: ");
    if (!error || !eg) return;
    while (error > report && error[-1] != '\n') error--;
    const char *eol = strchr(error, '\n');
    write_block(error, eol ? (size_t)(eol - error) : strlen(error), 0);
}

/* A process dying by a sanitizer: the block "report death <pid>", which the host gives to that
 * process's UBSan report (ASan's own errors are matched by their ERROR line above; LeakSanitizer's
 * exit runs no PHP code, so it writes nothing). */
static void php_death(void) {
    if (!eg || !eg->current_execute_data) return;
    char key[64];
    int n = snprintf(key, sizeof key, "death %d", (int)getpid());
    write_block(key, (size_t)n, 0);
}

/* A process dying by a signal no sanitizer handles (crash.c): the block "report crash <pid>". */
static void crash_block(const char *key, size_t key_length) {
    if (syscall(SYS_gettid) != getpid()) return; /* first: nothing of PHP's is read from another thread */
    if (eg && eg->current_execute_data) write_block(key, key_length, 1);
}

static void write_block(const char *key, size_t key_length, int in_signal) {
    /* PHP runs in the process's main thread only (asanlab's PHP is not ZTS): reported from another
     * thread (Swoole's reactor threads, say), PHP's globals describe the main thread, not this. */
    if (syscall(SYS_gettid) != getpid()) return;
    char path[512], line[64];
    snprintf(path, sizeof path, "%s/php-backtrace.%d", trace_dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    put_str(fd, "report ");
    put(fd, key, key_length);
    put_str(fd, "\n");
    const char *method = NULL, *uri = NULL;
    zend_object *message = NULL;
    int depth = 0;
    for (zend_execute_data *ex = eg->current_execute_data; ex && depth < 64; ex = ex->prev_execute_data) {
        zend_function *f = ex->func;
        if (!f) continue;
        depth++;
        put_str(fd, "frame ");
        if (f->common.scope && f->common.function_name) {
            put_str(fd, ZSTR_VAL(f->common.scope->name));
            put_str(fd, "::");
        }
        put_str(fd, f->common.function_name ? ZSTR_VAL(f->common.function_name) : "{main}");
        if (ZEND_USER_CODE(f->type) && f->op_array.filename) {
            put_str(fd, "\t");
            put_str(fd, ZSTR_VAL(f->op_array.filename));
            snprintf(line, sizeof line, "\t%u\n", ex->opline ? ex->opline->lineno : f->op_array.line_start);
            put_str(fd, line);
        } else {
            put_str(fd, "\t\t0\n");
        }
        for (uint32_t i = 1; !uri && !message && read_property && hash_str_find && i <= ZEND_CALL_NUM_ARGS(ex) && i <= 8;
             i++) {
            zval *arg = ZEND_CALL_ARG(ex, i);
            if (Z_TYPE_P(arg) != IS_OBJECT) continue;
            if (strcmp(ZSTR_VAL(Z_OBJCE_P(arg)->name), "Swoole\\Http\\Request") == 0) {
                method = request_field(Z_OBJ_P(arg), "request_method");
                uri = request_field(Z_OBJ_P(arg), "request_uri");
            } else if (websocket_frame(Z_OBJ_P(arg))) {
                message = Z_OBJ_P(arg);
            }
        }
    }
    long cid = current_coroutine(in_signal);
    if (cid > 0) {
        snprintf(line, sizeof line, "coroutine %ld\n", cid);
        put_str(fd, line);
    }
    if (uri) {
        put_str(fd, "request ");
        put_str(fd, method ? method : "?");
        put_str(fd, " ");
        put_str(fd, uri);
        put_str(fd, "\n");
    } else if (message) {
        put_websocket_frame(fd, message);
    }
    put_str(fd, "end\n");
    close(fd);
}

/* PHP's hook after every extension's start-up: Swoole is loaded by then, so its functions are
 * looked up here, outside any signal handler (crash_block may run in one). Chained: opcache sets
 * the hook too and calls the one it found. */
static zend_result (**post_startup_hook)(void);
static zend_result (*next_post_startup)(void);

static zend_result after_startup(void) {
    if (trace_dir[0]) current_coroutine(0);
    php_census_install(); /* the soak's census hook, once, from PHP's thread */
    return next_post_startup ? next_post_startup() : SUCCESS;
}

static void hook_startup(void) {
    post_startup_hook = (zend_result (**)(void))dlsym(RTLD_DEFAULT, "zend_post_startup_cb");
    if (post_startup_hook) {
        next_post_startup = *post_startup_hook;
        *post_startup_hook = after_startup;
    }
}

static void trace_init(void) {
    const char *dir = getenv("ASANLAB_PHP_TRACE_DIR");
    if (!dir || !*dir || strlen(dir) >= sizeof trace_dir) return;
    strcpy(trace_dir, dir);
    eg = (zend_executor_globals *)dlsym(RTLD_DEFAULT, "executor_globals");
    read_property = dlsym(RTLD_DEFAULT, "zend_read_property");
    hash_str_find = dlsym(RTLD_DEFAULT, "zend_hash_str_find");
    crash_start(trace_dir, crash_block); /* after ASan's init: its handlers, where it has them, stay */
    if (!__asan_set_error_report_callback) return;
    if (eg) __asan_set_error_report_callback(php_backtrace);
    if (eg && __sanitizer_set_death_callback) __sanitizer_set_death_callback(php_death);
    php_origin_start(trace_dir);
}
#else
/* Built without PHP's headers: asanlab's crash handler for images it did not build
 * (asanlab/image/crash_handler.py). It cannot walk PHP's frames (their layout is the headers'), but
 * PHP's own exported functions, the same in PHP 7 and 8, name the function running and the file and
 * line of the PHP code nearest it: one frame, found with dlsym like everything PHP here. */
static char trace_dir[480];
/* Looked up as the process starts (PHP's binary is loaded before any preloaded library's
 * constructor runs), never in the signal handler: dlsym may allocate, and the signal may have
 * come inside malloc with its lock held. */
static unsigned char (*php_is_executing)(void);
static const char *(*php_function)(void);
static const char *(*php_class)(const char **);
static const char *(*php_file)(void);
static unsigned (*php_lineno)(void);

static void api_block(const char *key, size_t key_length) {
    /* PHP runs in the main thread only: in another, its globals describe the main thread. */
    if (syscall(SYS_gettid) != getpid()) return;
    if (!php_is_executing || !php_function || !php_file || !php_lineno || !php_is_executing()) return;
    char path[512], line[64];
    snprintf(path, sizeof path, "%s/php-backtrace.%d", trace_dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    const char *space = "", *scope = php_class ? php_class(&space) : "";
    const char *name = php_function();
    put_str(fd, "report ");
    put(fd, key, key_length);
    put_str(fd, "\nframe ");
    if (scope && *scope && space && *space) {
        put_str(fd, scope);
        put_str(fd, space);
    }
    put_str(fd, name ? name : "{main}");
    put_str(fd, "\t");
    put_str(fd, php_file());
    snprintf(line, sizeof line, "\t%u\nend\n", php_lineno());
    put_str(fd, line);
    close(fd);
}

static void trace_init(void) {
    const char *dir = getenv("ASANLAB_PHP_TRACE_DIR");
    if (!dir || !*dir || strlen(dir) >= sizeof trace_dir) return;
    strcpy(trace_dir, dir);
    php_is_executing = (unsigned char (*)(void))dlsym(RTLD_DEFAULT, "zend_is_executing");
    php_function = (const char *(*)(void))dlsym(RTLD_DEFAULT, "get_active_function_name");
    php_class = (const char *(*)(const char **))dlsym(RTLD_DEFAULT, "get_active_class_name");
    php_file = (const char *(*)(void))dlsym(RTLD_DEFAULT, "zend_get_executed_filename");
    php_lineno = (unsigned (*)(void))dlsym(RTLD_DEFAULT, "zend_get_executed_lineno");
    crash_start(dir, api_block);
}
#endif

/* ---- start: only in PHP; each part only when its folder is given ------------------------------ */
__attribute__((constructor)) static void asanlab_agent_init(void) {
    /* Only PHP: shells and tools started in the container (docker exec) inherit LD_PRELOAD too. */
    if (!is_php()) return;
#if defined(ASANLAB_WITH_PHP) && !defined(ZTS)
    hook_startup();
#endif
    trace_init();
    const char *when = getenv("ASANLAB_DEADLINE");
    if (when && getpid() == 1) {
        const char *grace = getenv("ASANLAB_DEADLINE_GRACE");
        deadline = atof(when);
        hard_deadline = deadline + (grace ? atof(grace) : 15.0);
    }
    const char *dir = getenv("ASANLAB_AGENT_DIR");
    const char *trigger = getenv("ASANLAB_AGENT_TRIGGER");
    if (!dir || !*dir || strlen(dir) >= sizeof folder || !trigger || !*trigger ||
            strlen(trigger) >= sizeof trigger_path) {
        if (deadline > 0) { /* the thread for the deadline alone */
            pthread_atfork(before_fork, in_parent, in_child);
            start_thread();
        }
        return;
    }
    strcpy(folder, dir);
    strcpy(trigger_path, trigger);
    long seq, contexts;
    int profile;
    if (read_trigger(&seq, &profile, &contexts)) answered = seq; /* answer only what is asked from now on */
    php_heap_start();
    php_census_start(folder);
    pthread_atfork(before_fork, in_parent, in_child);
    start_thread();
}
