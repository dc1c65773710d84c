/* A process that exits while asanlab's agent (preloaded) still runs its thread. Named php-* when
 * built, so that the agent starts in it as in PHP. It prints "ready <pid>", waits for a line on
 * stdin, and returns from main. An exit handler registered where ASan registers LeakSanitizer's
 * exit check (.preinit_array: it runs after the handlers registered once main has begun, the
 * agent's among them) prints "exiting" and waits for another line before the process ends, so that
 * the test can ask the agent for a sample then.
 * tests/unit/test_agent_descriptors.py. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void late_in_exit(void) {
    char line[16];
    printf("exiting\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return;
}

static void register_early(void) { atexit(late_in_exit); }
__attribute__((section(".preinit_array"), used)) static void (*const early)(void) = register_early;

int main(void) {
    char line[16];
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 1;
    return 0;
}
