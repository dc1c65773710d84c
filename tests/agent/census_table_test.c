/* The agent's census visited set (images/agent/php-census.c) tested on the host: each refcounted
 * value is counted under the first root that reaches it, in an open-addressing set in mmap'd
 * memory, doubled when half full up to 2^24 slots; past that the census stops counting and says
 * it was truncated. Built by tests/agent/run.sh under ASan+UBSan and under ThreadSanitizer. */
#define ASANLAB_WITH_PHP 1
#include "../../images/agent/php-census.c"

#include "test_support.h"

static const void *value(size_t i) { return (const void *)(0x7f0000000000ULL + i * 16); }

static void fresh(void) {
    if (visited) munmap(visited, sizeof(uintptr_t) << bits);
    bits = FIRST_BITS;
    visited = table_of(bits);
    visits = 0;
    truncated = 0;
}

static void test_each_value_counts_once_across_growths(void) {
    fresh();
    size_t n = 300000; /* past 2^13 slots: several doublings */
    size_t first = 0, again = 0;
    for (size_t i = 0; i < n; i++) first += first_visit(value(i));
    for (size_t i = 0; i < n; i += 3) again += first_visit(value(i));
    CHECK(first == n && again == 0 && visits == n, "first %zu, again %zu, visits %u of %zu", first, again, visits, n);
    CHECK(bits > FIRST_BITS && visits <= (1u << bits) / 2, "%u visits in 2^%u slots", visits, bits);
    CHECK(!truncated, "a census of %zu values was marked truncated", n);
}

static void test_the_largest_set_stops_and_says_so(void) {
    fresh();
    size_t limit = (size_t)1 << (MAX_BITS - 1); /* half of the largest table */
    size_t counted = 0;
    for (size_t i = 0; i < limit + 10; i++) counted += first_visit(value(i));
    CHECK(counted == limit && truncated, "counted %zu of %zu, truncated %d", counted, limit, truncated);
    CHECK(!first_visit(value(3)), "a value seen before the set filled counts again");
}

int main(void) {
    test_each_value_counts_once_across_growths();
    test_the_largest_set_stops_and_says_so();
    return verdict("census set");
}
