/* asanlab agent, PHP origins: which PHP code allocated each block still alive at exit, so that
 * `asanlab run` can name the PHP line behind each LeakSanitizer leak.
 *
 * LeakSanitizer reports at exit, with C stacks only. Here every allocation the PHP thread makes
 * is recorded with the PHP call path at that moment (up to ORIGIN_FRAMES frames, innermost first;
 * none while no PHP code runs); a free forgets it. At exit, before LeakSanitizer's check, the blocks
 * still recorded are written to php-origin.<pid>. With LSAN_OPTIONS report_objects=1
 * LeakSanitizer lists each leaked object's address, and the host joins the two
 * (asanlab/reports/php_stack.py).
 *
 * Nothing here calls malloc: these hooks run inside the allocator. The block table is mmap'd and
 * grows by half when 7/8 full; a call path's text is written once, into a fixed arena, when first seen,
 * because at exit the PHP strings it names may be freed already.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent-php.h"

#include "php-origin.h"

#if defined(ASANLAB_WITH_PHP) && !defined(ZTS)

extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));
extern int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                                     void (*free_hook)(const volatile void *))
    __attribute__((weak));

#define ORIGIN_FRAMES 8
#define MAX_SITES 8192
#define FIRST_INDEX 2048       /* open addressing over sites, 2 bytes an entry: one page at first, */
#define LAST_INDEX (2 * MAX_SITES) /* doubled when half full; a short script needs few sites */
#define ARENA_BYTES (2 << 20)  /* the sites' text */
#define FIRST_SLOTS 4096       /* the block table starts with 4,096 slots (32 KiB) ... */
#define LAST_SLOTS (1 << 24)   /* ... and stops growing at 2^24 (128 MiB): later blocks are dropped */
/* Full at 7/8, then a quarter larger: the table is what the bookkeeping costs. Doubling at 3/4 left
 * a small process (a Swoole master) with a table 5/8 empty, 12.8% of its live heap; growing by half,
 * a short script that had just grown sat at 11.4%. Each growth rehashes: 4 times the blocks in all. */
#define FULL(n) ((n) / 8 * 7)
#define GROWN(n) ((n) + (n) / 4)

struct key {
    const void *scope, *function, *file; /* interned strings: the same pointer for the same name */
    uint32_t line;
};
struct site {
    uint64_t hash;
    int depth;
    struct key keys[ORIGIN_FRAMES];
    uint32_t text, length; /* its frame lines in the arena */
};
/* 8 bytes a block: ASan's blocks are 8-byte aligned and user addresses are below 2^47, so the
 * address >> 3 fits in 44 bits; a site number in the other 20 (MAX_SITES is 2^13). */
struct block {
    uint64_t key : 44; /* the address >> 3; 0: empty */
    uint64_t site : 20;
};

static zend_executor_globals *eg;
static char folder[480];
static struct site sites[MAX_SITES];
static uint32_t nsites;
static uint16_t *site_index; /* site + 1 (MAX_SITES < 2^16), 0: empty */
static size_t index_size;
static char arena[ARENA_BYTES];
static uint32_t arena_used;
static struct block *blocks;
static size_t slots;
static size_t used, dropped;
static size_t calls, peak_heap;
static int finished; /* written at exit: record nothing more */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
#define TLS __thread __attribute__((tls_model("initial-exec")))
static TLS int php_thread; /* set in the thread that runs PHP; a forked child inherits it */
static TLS int inside;     /* the hook itself must not recurse */

static uint64_t mix(uint64_t h, uint64_t v) { return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)); }

/* A slot in 0..n-1 for any n: the hash's top 32 bits scaled to n (no power of two needed). */
static size_t home(uint64_t key, size_t n) {
    return (size_t)((((key * 0x9e3779b97f4a7c15ULL) >> 32) * (uint64_t)n) >> 32);
}

static void arena_put(const char *s, size_t n) {
    if (n > ARENA_BYTES - arena_used) n = ARENA_BYTES - arena_used;
    memcpy(arena + arena_used, s, n);
    arena_used += (uint32_t)n;
}

/* The frame lines php_stack.py reads: "frame <function>\t<file>\t<line>", internal functions with
 * no file. */
static void render(struct site *s, zend_execute_data *ex) {
    char num[32];
    s->text = arena_used;
    for (int d = 0; ex && d < s->depth; ex = ex->prev_execute_data) {
        zend_function *f = ex->func;
        if (!f) continue;
        arena_put("frame ", 6);
        if (f->common.scope && f->common.function_name) {
            arena_put(ZSTR_VAL(f->common.scope->name), ZSTR_LEN(f->common.scope->name));
            arena_put("::", 2);
        }
        if (f->common.function_name) arena_put(ZSTR_VAL(f->common.function_name), ZSTR_LEN(f->common.function_name));
        else arena_put("{main}", 6);
        arena_put("\t", 1);
        if (s->keys[d].file) arena_put(ZSTR_VAL(f->op_array.filename), ZSTR_LEN(f->op_array.filename));
        int n = snprintf(num, sizeof num, "\t%u\n", s->keys[d].line);
        arena_put(num, (size_t)n);
        d++;
    }
    s->length = arena_used - s->text;
}

static void *map_pages(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Twice the entries; false at LAST_INDEX or when no memory is left. */
static int grow_index(void) {
    size_t n = index_size * 2;
    uint16_t *bigger = n <= LAST_INDEX ? (uint16_t *)map_pages(n * sizeof *bigger) : NULL;
    if (!bigger) return 0;
    for (uint32_t s = 0; s < nsites; s++) {
        size_t i = sites[s].hash & (n - 1);
        while (bigger[i]) i = (i + 1) & (n - 1);
        bigger[i] = (uint16_t)(s + 1);
    }
    munmap(site_index, index_size * sizeof *site_index);
    site_index = bigger;
    index_size = n;
    return 1;
}

/* The site of the PHP code running now, found or added; UINT32_MAX when the tables are full. */
static uint32_t current_site(void) {
    struct key keys[ORIGIN_FRAMES];
    memset(keys, 0, sizeof keys); /* compared with memcmp: no stray padding bytes */
    int depth = 0;
    uint64_t h = 0;
    for (zend_execute_data *ex = eg->current_execute_data; ex && depth < ORIGIN_FRAMES; ex = ex->prev_execute_data) {
        zend_function *f = ex->func;
        if (!f) continue;
        struct key *k = &keys[depth++];
        k->scope = f->common.scope ? f->common.scope->name : NULL;
        k->function = f->common.function_name;
        k->file = ZEND_USER_CODE(f->type) ? f->op_array.filename : NULL;
        k->line = k->file ? (ex->opline ? ex->opline->lineno : f->op_array.line_start) : 0;
        h = mix(mix(mix(mix(h, (uintptr_t)k->scope), (uintptr_t)k->function), (uintptr_t)k->file), k->line);
    }
    size_t i = h & (index_size - 1);
    for (; site_index[i]; i = (i + 1) & (index_size - 1)) {
        struct site *s = &sites[site_index[i] - 1];
        if (s->hash == h && s->depth == depth && memcmp(s->keys, keys, sizeof(struct key) * (size_t)depth) == 0)
            return site_index[i] - 1;
    }
    if (nsites == MAX_SITES || ARENA_BYTES - arena_used < 4096) return UINT32_MAX;
    if ((nsites + 1) * 2 > index_size) {
        if (!grow_index()) return UINT32_MAX;
        for (i = h & (index_size - 1); site_index[i]; i = (i + 1) & (index_size - 1)) {}
    }
    struct site *s = &sites[nsites];
    s->hash = h;
    s->depth = depth;
    memcpy(s->keys, keys, sizeof keys);
    render(s, eg->current_execute_data);
    site_index[i] = (uint16_t)++nsites;
    return nsites - 1;
}

static struct block *map_table(size_t n) { return (struct block *)map_pages(sizeof(struct block) * n); }

static void insert(struct block *table, size_t n, uint64_t key, uint32_t site) {
    size_t i = home(key, n);
    while (table[i].key != 0 && table[i].key != key) i = i + 1 == n ? 0 : i + 1;
    if (table[i].key == 0) __atomic_store_n(&used, used + 1, __ATOMIC_RELAXED); /* read without the lock in on_free */
    table[i].key = key;
    table[i].site = site;
}

/* Half as many slots again; false when the table is at its largest or no memory is left. */
static int grow(void) {
    if (slots >= LAST_SLOTS) return 0;
    size_t n = GROWN(slots);
    struct block *bigger = map_table(n), *old = blocks;
    if (!bigger) return 0;
    __atomic_store_n(&used, 0, __ATOMIC_RELAXED);
    for (size_t i = 0; i < slots; i++)
        if (old[i].key) insert(bigger, n, old[i].key, old[i].site);
    blocks = bigger;
    munmap(old, sizeof(struct block) * slots);
    slots = n;
    return 1;
}

static void write_origins(void);

static void on_malloc(const volatile void *ptr, size_t size) {
    (void)size;
    if (!php_thread || inside || !ptr || finished) return;
    inside = 1;
    /* Handlers run last-registered first, and the dump must come before LeakSanitizer's check (a
     * check that finds leaks ends the process). Registered from the library's constructor, it ran
     * after the check (measured: PHP 8.2, clang 14); registered here, once PHP code runs, before.
     * Blocks allocated while no PHP code runs (PHP's and the extensions' start-up, compiling the
     * script) are recorded too, under the site with no frame: a leak made only of them is start-up,
     * whatever its C stack says (a stack cut short in a library without frame pointers says nothing). */
    static int registered;
    if (!registered && eg->current_execute_data) {
        registered = 1;
        atexit(write_origins);
    }
    pthread_mutex_lock(&lock);
    /* The app's live heap at its largest, sampled every 1,024 recorded allocations: what the table
     * is set against (at exit, after PHP's shutdown, the live heap is nearly empty). */
    if ((++calls & 1023) == 0 && __sanitizer_get_current_allocated_bytes) {
        size_t now = __sanitizer_get_current_allocated_bytes();
        if (now > peak_heap) peak_heap = now;
    }
    uint32_t site = current_site();
    if (site == UINT32_MAX || (used >= FULL(slots) && !grow())) dropped++;
    else insert(blocks, slots, (uint64_t)(uintptr_t)ptr >> 3, site);
    pthread_mutex_unlock(&lock);
    inside = 0;
}

/* Backward-shift deletion: every entry stays reachable from its home slot, with no tombstones. */
static void on_free(const volatile void *ptr) {
    if (!ptr || inside || finished || __atomic_load_n(&used, __ATOMIC_RELAXED) == 0) return;
    pthread_mutex_lock(&lock);
    uint64_t key = (uint64_t)(uintptr_t)ptr >> 3;
    size_t n = slots, i = home(key, n);
    while (blocks[i].key != 0 && blocks[i].key != key) i = i + 1 == n ? 0 : i + 1;
    if (blocks[i].key != 0) {
        for (size_t j = i + 1 == n ? 0 : i + 1; blocks[j].key != 0; j = j + 1 == n ? 0 : j + 1) {
            size_t h = home(blocks[j].key, n);
            int stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
            if (!stays) {
                blocks[i] = blocks[j];
                i = j;
            }
        }
        blocks[i].key = 0;
        __atomic_store_n(&used, used - 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&lock);
}

/* Raw writes through a static buffer: no stdio, whose buffers are malloc'd. */
static char out[1 << 16];
static size_t outlen;

static void flush_to(int fd) {
    for (size_t done = 0; done < outlen;) {
        ssize_t w = write(fd, out + done, outlen - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    outlen = 0;
}

static void put(int fd, const char *s, size_t n) {
    while (n > 0) {
        if (outlen == sizeof out) flush_to(fd);
        size_t k = sizeof out - outlen < n ? sizeof out - outlen : n;
        memcpy(out + outlen, s, k);
        outlen += k;
        s += k;
        n -= k;
    }
}

/* php-origin.<pid>:
 *   origin <pid> <blocks alive> <blocks not recorded> <bytes kept here> <the process's largest live heap>
 *   site <id>                     then its frame lines, innermost first
 *   block <address> <site id>     each block recorded and still alive
 *   end
 */
static void write_origins(void) {
    inside = 1;
    pthread_mutex_lock(&lock);
    finished = 1;
    char path[512], line[64];
    snprintf(path, sizeof path, "%s/php-origin.%d", folder, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        /* What this bookkeeping holds (the block table, the sites and their text) against the
         * allocator's live bytes at their largest: the cost asanlab reports beside the run. */
        size_t kept = sizeof(struct block) * slots + nsites * sizeof(struct site) + arena_used +
                      index_size * sizeof *site_index;
        size_t heap = __sanitizer_get_current_allocated_bytes ? __sanitizer_get_current_allocated_bytes() : 0;
        if (peak_heap > heap) heap = peak_heap;
        put(fd, line, (size_t)snprintf(line, sizeof line, "origin %d %zu %zu %zu %zu\n", (int)getpid(), used, dropped,
                                       kept, heap));
        for (uint32_t s = 0; s < nsites; s++) {
            put(fd, line, (size_t)snprintf(line, sizeof line, "site %u\n", s));
            put(fd, arena + sites[s].text, sites[s].length);
        }
        size_t n = blocks ? slots : 0;
        for (size_t i = 0; i < n; i++)
            if (blocks[i].key) put(fd, line, (size_t)snprintf(line, sizeof line, "block 0x%lx %u\n",
                                                           (unsigned long)(blocks[i].key << 3),
                                                           (unsigned)blocks[i].site));
        put(fd, "end\n", 4);
        flush_to(fd);
        close(fd);
    }
    pthread_mutex_unlock(&lock);
}

/* Held across fork(), so that no other thread is halfway through changing the table the child gets. */
static void before_fork(void) {
    pthread_mutex_lock(&lock);
    inside = 1; /* a free in the forking thread until then would wait for itself */
}
static void after_fork(void) {
    inside = 0;
    pthread_mutex_unlock(&lock);
}
static void in_child(void) {
    inside = 0;
    pthread_mutex_init(&lock, NULL);
}

void php_origin_start(const char *dir) {
    const char *on = getenv("ASANLAB_PHP_ORIGINS");
    if (!on || strcmp(on, "1") != 0 || !dir || strlen(dir) >= sizeof folder) return;
    eg = (zend_executor_globals *)dlsym(RTLD_DEFAULT, "executor_globals");
    if (!eg || !__sanitizer_install_malloc_and_free_hooks) return;
    blocks = map_table(FIRST_SLOTS);
    site_index = (uint16_t *)map_pages(FIRST_INDEX * sizeof *site_index);
    if (!blocks || !site_index) return;
    index_size = FIRST_INDEX;
    slots = FIRST_SLOTS;
    strcpy(folder, dir);
    php_thread = 1;
    pthread_atfork(before_fork, after_fork, in_child);
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}


#else
void php_origin_start(const char *dir) { (void)dir; }
#endif
