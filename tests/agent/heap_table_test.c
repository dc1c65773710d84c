/* The agent's sampled-heap table (images/agent/php-heap.c) tested on the host: the table is
 * compiled in with this PHP's headers, its PHP side given a fake execute_data, and its hooks called
 * as ASan calls them. Built by tests/agent/run.sh under ASan+UBSan and under ThreadSanitizer.
 *
 *   insert/forget, growth to the largest table and what it drops, concurrent frees from other
 *   threads while the PHP thread inserts, removes and grows, and fork in the middle of an update
 *   (the child's lock-free probe must not see an update that never ends). */
#define ASANLAB_WITH_PHP 1
#include "../../images/agent/php-heap.c"

#include <sys/wait.h>

#include "test_support.h"

static void reset(void) {
    eg = fake_php("leak");
    if (table) munmap(table, sizeof(struct table) + (sizeof(struct slot) << table->bits));
    table = map_table(FIRST_BITS);
    used = dropped = nsites = 0;
    memset(sites, 0, sizeof sites);
    php_thread = 1;
    mean_interval = 1.0; /* every allocation of 16 bytes is sampled (p = 1 - e^-16) */
    rng = 0x1234567;
    until_sample = 0;
}

static uintptr_t address(int set, int i) { return 0x100000000ULL * (uintptr_t)(set + 1) + (uintptr_t)i * 16; }

static void test_insert_and_forget(void) {
    reset();
    int n = 40000;
    for (int i = 0; i < n; i++) on_malloc((void *)address(0, i), 16);
    CHECK(used == n && dropped == 0, "used %d dropped %d after %d samples", used, dropped, n);
    CHECK(table->bits == 16, "the table grew to 2^%u slots, 2^16 expected", table->bits);
    int missing = 0;
    for (int i = 0; i < n; i++) missing += !maybe_sampled(address(0, i));
    CHECK(missing == 0, "%d sampled blocks not found", missing);
    CHECK(!maybe_sampled(address(1, 7)), "a block never sampled is found");
    for (int i = 0; i < n; i += 2) on_free((void *)address(0, i));
    CHECK(used == n / 2, "used %d after freeing half", used);
    for (int i = 1; i < n; i += 2) CHECK(maybe_sampled(address(0, i)), "block %d lost after its neighbours' removal", i);
    for (int i = 1; i < n; i += 2) on_free((void *)address(0, i));
    CHECK(used == 0, "used %d after freeing all", used);
    int left = 0;
    for (uint32_t j = 0; j < (1u << table->bits); j++) left += table->slots[j].ptr != 0;
    CHECK(left == 0, "%d slots still hold a block", left);
    CHECK(sites[0].blocks < 0.5 && sites[0].blocks > -0.5, "site still counts %.1f blocks", sites[0].blocks);
}

static void test_growth_stops_and_drops(void) {
    reset();
    int n = 60000, capacity = (3 << LAST_BITS) / 4;
    for (int i = 0; i < n; i++) on_malloc((void *)address(0, i), 16);
    CHECK(used == capacity && dropped == n - capacity, "used %d dropped %d, %d and %d expected", used, dropped,
          capacity, n - capacity);
}

/* Other threads free their own sampled blocks (as Swoole's reactor threads free memory) while the
 * PHP thread inserts, frees and grows the table. */
#define THREADS 3
#define PER_THREAD 4000
static void *free_own(void *arg) {
    int set = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        on_free((void *)address(set, i));
        on_free((void *)address(9, i)); /* never sampled: the lock-free path */
    }
    return NULL;
}

static void test_concurrent_frees(void) {
    reset();
    for (int t = 1; t <= THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) on_malloc((void *)address(t, i), 16);
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, free_own, (void *)(intptr_t)(t + 1));
    for (int round = 0; round < 4; round++) { /* insert enough to grow twice, free it again */
        for (int i = 0; i < 30000; i++) on_malloc((void *)address(0, i), 16);
        for (int i = 0; i < 30000; i++) on_free((void *)address(0, i));
    }
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    CHECK(used == 0, "used %d after every block was freed", used);
    for (int t = 1; t <= THREADS; t++)
        for (int i = 0; i < PER_THREAD; i += 97) CHECK(!maybe_sampled(address(t, i)), "a freed block is found");
}

/* A thread in the middle of an update (the lock held, `version` odd) when the PHP thread forks. */
static int stop_updating;
static void *update_forever(void *unused) {
    (void)unused;
    while (!__atomic_load_n(&stop_updating, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&lock);
        begin_change();
        for (volatile int spin = 0; spin < 200; spin++) {}
        end_change();
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void test_fork_in_the_middle_of_an_update(void) {
    reset();
    pthread_atfork(php_heap_fork_prepare, php_heap_fork_parent, php_heap_child); /* as the agent does */
    pthread_t updater;
    pthread_create(&updater, NULL, update_forever, NULL);
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        pid_t child = fork();
        if (child == 0) {
            /* Nothing else runs here: an update in progress would never end. */
            int ok = (__atomic_load_n(&version, __ATOMIC_RELAXED) & 1) == 0 && !maybe_sampled(address(5, 1));
            on_malloc((void *)address(5, 2), 16);
            ok = ok && maybe_sampled(address(5, 2));
            on_free((void *)address(5, 2));
            _exit(ok && !maybe_sampled(address(5, 2)) ? 0 : 1);
        }
        int status = 0;
        waitpid(child, &status, 0);
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    __atomic_store_n(&stop_updating, 1, __ATOMIC_RELAXED);
    pthread_join(updater, NULL);
    CHECK(bad == 0, "%d of 300 children forked during an update saw it never end", bad);
}

int main(void) {
    test_insert_and_forget();
    test_growth_stops_and_drops();
    test_concurrent_frees();
    test_fork_in_the_middle_of_an_update();
    return verdict("heap table");
}
