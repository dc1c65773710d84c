/* The agent's origin table (images/agent/php-origin.c) tested on the host: which PHP code allocated
 * each live block, kept in a table grown by a quarter at 7/8. Its PHP side is given a fake
 * execute_data, its hooks are called as ASan calls them. Built by tests/agent/run.sh under
 * ASan+UBSan and under ThreadSanitizer.
 *
 *   insert/forget across several growths, concurrent frees from other threads while the PHP thread
 *   inserts and grows, and fork while another thread is in the middle of an update (the child must
 *   be able to take the table's lock: before_fork holds it across fork). */
#define ASANLAB_WITH_PHP 1
#include "../../images/agent/php-origin.c"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "test_support.h"

static void start(void) {
    eg = fake_php("keep");
    char dir[] = "/tmp/asanlab-origin-test-XXXXXX"; /* where write_origins goes at exit */
    strcpy(folder, mkdtemp(dir) ? dir : "/tmp");
    blocks = map_table(FIRST_SLOTS);
    site_index = (uint16_t *)map_pages(FIRST_INDEX * sizeof *site_index);
    index_size = FIRST_INDEX;
    slots = FIRST_SLOTS;
    php_thread = 1;
}

static uintptr_t address(int set, int i) { return 0x100000000ULL * (uintptr_t)(set + 1) + (uintptr_t)i * 16; }

static size_t in_table(void) {
    size_t n = 0;
    for (size_t i = 0; i < slots; i++) n += blocks[i].key != 0;
    return n;
}

static void test_insert_and_forget(void) {
    size_t before = used;
    int n = 100000;
    for (int i = 0; i < n; i++) on_malloc((void *)address(0, i), 16);
    CHECK(used == before + (size_t)n && dropped == 0, "used %zu dropped %zu after %d blocks", used, dropped, n);
    CHECK(slots > FIRST_SLOTS && used <= FULL(slots), "%zu slots for %zu blocks", slots, used);
    for (int i = 0; i < n; i += 2) on_free((void *)address(0, i));
    CHECK(used == before + (size_t)n / 2 && in_table() == used, "used %zu, %zu in the table", used, in_table());
    for (int i = 1; i < n; i += 2) on_free((void *)address(0, i));
    CHECK(used == before && in_table() == used, "used %zu after freeing all", used);
}

#define THREADS 3
#define PER_THREAD 5000
static void *free_own(void *arg) {
    int set = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        on_free((void *)address(set, i));
        on_free((void *)address(9, i)); /* never recorded */
    }
    return NULL;
}

static void test_concurrent_frees(void) {
    size_t before = used;
    for (int t = 1; t <= THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) on_malloc((void *)address(t, i), 16);
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, free_own, (void *)(intptr_t)(t + 1));
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 50000; i++) on_malloc((void *)address(0, i), 16);
        for (int i = 0; i < 50000; i++) on_free((void *)address(0, i));
    }
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    CHECK(used == before && in_table() == used, "used %zu, %zu in the table, %zu expected", used, in_table(), before);
}

static int stop_freeing;
static void *free_forever(void *unused) {
    (void)unused;
    for (int i = 0; !__atomic_load_n(&stop_freeing, __ATOMIC_RELAXED); i = (i + 1) % PER_THREAD) {
        on_free((void *)address(7, i)); /* takes the lock: blocks of set 7 are recorded */
        pthread_mutex_lock(&lock); /* and an update that takes its time, as a growth does */
        for (volatile int spin = 0; spin < 200; spin++) {}
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void test_fork_in_the_middle_of_an_update(void) {
    for (int i = 0; i < PER_THREAD; i++) on_malloc((void *)address(7, i), 16);
    pthread_t freer;
    pthread_create(&freer, NULL, free_forever, NULL);
    int bad = 0;
    for (int k = 0; k < 200; k++) {
        pid_t child = fork();
        if (child == 0) {
            on_malloc((void *)address(8, 1), 16);
            on_free((void *)address(8, 1));
            _exit(0);
        }
        /* A lock held at fork by a thread the child does not have: the child would wait forever. */
        int status = 0, waited = 0;
        while (waitpid(child, &status, WNOHANG) == 0 && waited++ < 500) usleep(10 * 1000);
        if (waited > 500) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
        }
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    __atomic_store_n(&stop_freeing, 1, __ATOMIC_RELAXED);
    pthread_join(freer, NULL);
    CHECK(bad == 0, "%d of 200 children forked during an update could not use the table", bad);
}

int main(void) {
    start();
    pthread_atfork(before_fork, after_fork, in_child); /* as php_origin_start does */
    test_insert_and_forget();
    test_concurrent_frees();
    test_fork_in_the_middle_of_an_update();
    finished = 1; /* the table is not written at this test's exit */
    return verdict("origin table");
}
