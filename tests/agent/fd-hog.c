/* A server that leaks descriptors until open() fails with EMFILE, and keeps trying: it takes every
 * descriptor the moment one is free. Named php-* when built, so that asanlab's agent (preloaded)
 * starts in it as in PHP. It fills its table, forks a child that does the same, prints
 * "ready <pid> <child pid>", and runs until SIGTERM. tests/unit/test_agent_descriptors.py. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t done;

static void on_term(int sig) {
    (void)sig;
    done = 1;
}

static void fill(void) {
    while (open("/dev/null", O_RDONLY) >= 0) {
    }
}

/* No pause between tries: a descriptor the agent frees for a moment is taken at once. */
static void greedy(void) {
    while (!done) open("/dev/null", O_RDONLY);
}

int main(void) {
    struct rlimit limit = {64, 64};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return 2;
    signal(SIGTERM, on_term);
    fill();
    if (errno != EMFILE) return 3;
    pid_t child = fork();
    if (child < 0) return 4;
    if (child == 0) {
        fill();
        greedy();
        _exit(0);
    }
    printf("ready %d %d\n", (int)getpid(), (int)child);
    fflush(stdout);
    greedy();
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    return 0;
}
