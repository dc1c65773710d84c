/* asanlab agent, PHP heap sites: which PHP code holds the live heap, for `asanlab soak`.
 *
 * ASan calls a hook after every malloc and before every free. A sample of allocations, about one
 * per ASANLAB_PHP_SAMPLE_BYTES allocated (a Poisson process over bytes, so a request that
 * allocates the same sequence every time is not sampled at the same place every time), records
 * the PHP code running at that moment: up to SITE_FRAMES frames of EG(current_execute_data),
 * innermost first, each the function and, for PHP code, file:line. A sampled block is forgotten
 * when it is freed. On the soak's profile request the agent writes each site's estimated live
 * bytes and blocks; the host diffs them between checkpoints (asanlab/soak/report.py).
 *
 * Only the PHP thread samples: other threads (Swoole's reactor threads) do not run PHP, and their
 * reading EG() would race. Nothing here allocates: these hooks run inside the allocator.
 * Memory: the table of sampled blocks (24 bytes each) starts with 1,024 slots and doubles when 3/4
 * full, up to 65,536 (1.5 MiB); the sites (SITES at most) are touched only as they are found.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "agent-php.h"

#include "php-heap.h"

#if defined(ASANLAB_WITH_PHP) && !defined(ZTS)

extern int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                                     void (*free_hook)(const volatile void *))
    __attribute__((weak));

#define SITE_FRAMES 4
#define SITES 4096
#define FIRST_BITS 10 /* the table of sampled blocks: 2^10 slots at first ... */
#define LAST_BITS 16  /* ... at most 2^16; open addressing, at most 3/4 full */

struct frame {
    zend_string *scope, *function, *file; /* interned: they outlive the code that named them */
    uint32_t line;
};
struct site {
    struct frame frames[SITE_FRAMES];
    int depth;
    uint64_t hash;
    double bytes; /* estimated live bytes and blocks (each sample stands for 1/p of its kind) */
    double blocks;
};
struct slot {
    uintptr_t ptr; /* 0: empty */
    uint32_t site;
    float weight; /* 1/p of this sample */
    uint32_t size;
};

static zend_executor_globals *eg;
static struct site sites[SITES];
static int nsites;
/* Linear probing with backward-shift deletion: no tombstones to fill it. A table is swapped for one
 * twice its size under the lock; the old one stays mapped (its pages given back), because a lock-free
 * probe (maybe_sampled) may still be reading it. */
struct table {
    unsigned bits;
    struct slot slots[];
};
static struct table *table;
static int used, dropped;
static double mean_interval = 16384.0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* initial-exec: the agent is preloaded, so its thread-locals sit in static TLS and each access is
 * one instruction instead of a __tls_get_addr call on every malloc. */
#define TLS __thread __attribute__((tls_model("initial-exec")))
static TLS int php_thread; /* set in the thread that runs PHP */
static TLS int inside;     /* the hook itself must not recurse */
static TLS int64_t until_sample;
static TLS uint64_t rng;

static uint64_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Bytes to the next sample: exponential with the mean interval. */
static int64_t interval(void) {
    double u = ((double)(next_random() >> 11) + 0.5) / 9007199254740992.0;
    return (int64_t)(-log(u) * mean_interval) + 1;
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}

static uint32_t find_site(void) {
    struct frame frames[SITE_FRAMES];
    memset(frames, 0, sizeof frames); /* compared with memcmp: no stray padding bytes */
    int depth = 0;
    uint64_t h = 0;
    for (zend_execute_data *ex = eg->current_execute_data; ex && depth < SITE_FRAMES; ex = ex->prev_execute_data) {
        zend_function *f = ex->func;
        if (!f) continue;
        struct frame *fr = &frames[depth++];
        fr->scope = f->common.scope ? f->common.scope->name : NULL;
        fr->function = f->common.function_name;
        fr->file = ZEND_USER_CODE(f->type) ? f->op_array.filename : NULL;
        fr->line = fr->file ? (ex->opline ? ex->opline->lineno : f->op_array.line_start) : 0;
        h = mix(mix(mix(h, (uintptr_t)fr->function), (uintptr_t)fr->file), fr->line);
    }
    for (int i = 0; i < nsites; i++) {
        if (sites[i].hash == h && sites[i].depth == depth &&
            memcmp(sites[i].frames, frames, sizeof(struct frame) * (size_t)depth) == 0) return (uint32_t)i;
    }
    if (nsites == SITES) return UINT32_MAX;
    struct site *s = &sites[nsites];
    memcpy(s->frames, frames, sizeof frames);
    s->depth = depth;
    s->hash = h;
    return (uint32_t)nsites++;
}

static uint32_t slot_of(uintptr_t p, unsigned bits) { return (uint32_t)((p >> 4) * 0x9e3779b97f4a7c15ULL >> (64 - bits)); }

static struct table *map_table(unsigned bits) {
    void *m = mmap(NULL, sizeof(struct table) + (sizeof(struct slot) << bits), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    struct table *t = (struct table *)m;
    t->bits = bits;
    return t;
}

/* Most frees are of blocks never sampled: find that out without the lock. Writers (holding the
 * lock) make `version` odd while they change the table; a probe that saw it change, or saw it odd,
 * says "maybe" and the caller looks again under the lock. */
static uint64_t version;

static void begin_change(void) { __atomic_fetch_add(&version, 1, __ATOMIC_ACQ_REL); }
static void end_change(void) { __atomic_fetch_add(&version, 1, __ATOMIC_RELEASE); }

/* Twice the slots, with the lock held; false at the largest size or without memory. */
static int grow(void) {
    struct table *old = table;
    if (old->bits >= LAST_BITS) return 0;
    struct table *t = map_table(old->bits + 1);
    if (!t) return 0;
    uint32_t mask = (1u << t->bits) - 1;
    for (uint32_t j = 0; j < (1u << old->bits); j++) {
        if (!old->slots[j].ptr) continue;
        uint32_t i = slot_of(old->slots[j].ptr, t->bits);
        while (t->slots[i].ptr != 0) i = (i + 1) & mask;
        t->slots[i] = old->slots[j];
    }
    begin_change();
    __atomic_store_n(&table, t, __ATOMIC_RELEASE);
    end_change();
    /* A probe still in the old table reads zeros from here on, and sees `version` changed. */
    madvise(old, sizeof(struct table) + (sizeof(struct slot) << old->bits), MADV_DONTNEED);
    return 1;
}

static void on_malloc(const volatile void *ptr, size_t size) {
    if (!php_thread || inside || !ptr || !eg || !eg->current_execute_data) return;
    until_sample -= (int64_t)size;
    if (until_sample > 0) return;
    inside = 1;
    until_sample = interval();
    double p = 1.0 - exp(-(double)size / mean_interval);
    pthread_mutex_lock(&lock);
    uint32_t site = find_site();
    if (site == UINT32_MAX || (used >= (3 << table->bits) / 4 && !grow())) {
        dropped++;
    } else {
        uint32_t mask = (1u << table->bits) - 1, i = slot_of((uintptr_t)ptr, table->bits);
        while (table->slots[i].ptr != 0) i = (i + 1) & mask;
        begin_change();
        struct slot *slot = &table->slots[i];
        slot->site = site;
        slot->weight = (float)(1.0 / p);
        slot->size = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
        __atomic_store_n(&slot->ptr, (uintptr_t)ptr, __ATOMIC_RELAXED); /* probed without the lock */
        end_change();
        __atomic_store_n(&used, used + 1, __ATOMIC_RELAXED);
        sites[site].bytes += (double)size / p;
        sites[site].blocks += 1.0 / p;
    }
    pthread_mutex_unlock(&lock);
    inside = 0;
}

/* Empty slot i, moving back the entries after it that probed past it, so that every entry stays
 * reachable from its home slot without a "deleted" marker. */
static void remove_at(uint32_t i) {
    struct slot *slots = table->slots;
    uint32_t mask = (1u << table->bits) - 1;
    for (uint32_t j = (i + 1) & mask; slots[j].ptr != 0; j = (j + 1) & mask) {
        uint32_t home = slot_of(slots[j].ptr, table->bits);
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) { /* ptr is probed without the lock (maybe_sampled): stored atomically */
            slots[i].site = slots[j].site;
            slots[i].weight = slots[j].weight;
            slots[i].size = slots[j].size;
            __atomic_store_n(&slots[i].ptr, slots[j].ptr, __ATOMIC_RELAXED);
            i = j;
        }
    }
    __atomic_store_n(&slots[i].ptr, 0, __ATOMIC_RELAXED);
}

static int maybe_sampled(uintptr_t p) {
    uint64_t before = __atomic_load_n(&version, __ATOMIC_ACQUIRE);
    if (before & 1) return 1;
    int found = 0;
    struct table *t = __atomic_load_n(&table, __ATOMIC_ACQUIRE);
    uint32_t mask = (1u << t->bits) - 1, i = slot_of(p, t->bits);
    for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
        uintptr_t q = __atomic_load_n(&t->slots[i].ptr, __ATOMIC_RELAXED);
        if (q == 0) break;
        if (q == p) {
            found = 1;
            break;
        }
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return found || __atomic_load_n(&version, __ATOMIC_RELAXED) != before;
}

static void on_free(const volatile void *ptr) {
    /* `used` is read here without the lock (any thread frees): atomic, as its writes are. */
    if (!ptr || __atomic_load_n(&used, __ATOMIC_RELAXED) == 0 || !maybe_sampled((uintptr_t)ptr)) return;
    pthread_mutex_lock(&lock);
    begin_change();
    /* At most 3/4 full: a probe always meets an empty slot. */
    struct slot *slots = table->slots;
    uint32_t mask = (1u << table->bits) - 1;
    for (uint32_t i = slot_of((uintptr_t)ptr, table->bits); slots[i].ptr != 0; i = (i + 1) & mask) {
        if (slots[i].ptr == (uintptr_t)ptr) {
            struct site *s = &sites[slots[i].site];
            s->bytes -= (double)slots[i].size * slots[i].weight;
            s->blocks -= slots[i].weight;
            remove_at(i);
            __atomic_store_n(&used, used - 1, __ATOMIC_RELAXED);
            break;
        }
    }
    end_change();
    pthread_mutex_unlock(&lock);
}

void php_heap_start(void) {
    const char *env = getenv("ASANLAB_PHP_SAMPLE_BYTES");
    if (env && strcmp(env, "0") == 0) return; /* turned off */
    if (env && atof(env) >= 1.0) mean_interval = atof(env);
    eg = (zend_executor_globals *)dlsym(RTLD_DEFAULT, "executor_globals");
    if (!eg || !__sanitizer_install_malloc_and_free_hooks) return;
    table = map_table(FIRST_BITS);
    if (!table) return;
    php_thread = 1;
    rng = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)time(NULL) ^ 0x5851f42d4c957f2dULL;
    until_sample = interval();
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}

/* Around fork (the agent's one pthread_atfork): the lock is taken first, so no other thread is
 * half-way through an update when the child is copied. Without it a child forked while a reactor
 * thread's free was removing a block kept an odd `version` and a half-moved table: every free of
 * its life took the slow path. */
void php_heap_fork_prepare(void) {
    if (table) pthread_mutex_lock(&lock);
}

void php_heap_fork_parent(void) {
    if (table) pthread_mutex_unlock(&lock);
}

void php_heap_child(void) {
    /* fork() copied the tables whole (php_heap_fork_prepare held the lock): what the parent held,
     * the child holds too. The lock was held by the thread that forked: a fresh one is equivalent. */
    pthread_mutex_init(&lock, NULL);
    rng ^= (uint64_t)getpid() << 32;
}

/* Output without stdio: the lock is held, and a free from inside fclose would wait for it. */
static char outbuf[1 << 16];
static size_t outlen;
static int outfd = -1;

static void flush_out(void) {
    size_t done = 0;
    while (done < outlen) {
        ssize_t w = write(outfd, outbuf + done, outlen - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    outlen = 0;
}

static void out_str(const char *s) {
    for (size_t n = strlen(s); n > 0;) {
        if (outlen == sizeof outbuf) flush_out();
        size_t k = sizeof outbuf - outlen < n ? sizeof outbuf - outlen : n;
        memcpy(outbuf + outlen, s, k);
        outlen += k;
        s += k;
        n -= k;
    }
}

/* One block per profile request:
 *   heap <seq> <sampled blocks alive> <samples dropped> <mean interval> <bookkeeping bytes>
 *   site <live bytes> <live blocks>
 *   frame <function>\t<file>\t<line>     innermost first; internal functions have no file
 *   end
 * Written from the agent's thread with the lock held: the PHP thread waits at its next sample. */
void php_heap_dump(const char *path, long seq) {
    if (!eg) return;
    char num[128];
    pthread_mutex_lock(&lock);
    outfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (outfd >= 0) {
        /* What this sampler keeps in memory: the table, the sites found, the output buffer. */
        size_t kept = (table ? sizeof(struct slot) << table->bits : 0) + (size_t)nsites * sizeof(struct site) + sizeof outbuf;
        snprintf(num, sizeof num, "heap %ld %d %d %.0f %zu\n", seq, used, dropped, mean_interval, kept);
        out_str(num);
        for (int i = 0; i < nsites; i++) {
            if (sites[i].blocks < 0.5) continue; /* nothing sampled from it is alive */
            snprintf(num, sizeof num, "site %.0f %.1f\n", sites[i].bytes, sites[i].blocks);
            out_str(num);
            for (int d = 0; d < sites[i].depth; d++) {
                const struct frame *fr = &sites[i].frames[d];
                out_str("frame ");
                if (fr->scope && fr->function) {
                    out_str(ZSTR_VAL(fr->scope));
                    out_str("::");
                }
                out_str(fr->function ? ZSTR_VAL(fr->function) : "{main}");
                out_str("\t");
                if (fr->file) {
                    out_str(ZSTR_VAL(fr->file));
                    snprintf(num, sizeof num, "\t%u\n", fr->line);
                    out_str(num);
                } else {
                    out_str("\t0\n");
                }
            }
        }
        out_str("end\n");
        flush_out();
        close(outfd);
    }
    pthread_mutex_unlock(&lock);
}

#else
void php_heap_start(void) {}
void php_heap_child(void) {}
void php_heap_fork_prepare(void) {}
void php_heap_fork_parent(void) {}
void php_heap_dump(const char *path, long seq) { (void)path; (void)seq; }
#endif
