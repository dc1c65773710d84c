/* asanlab agent, PHP heap census: which PHP variable holds the memory, for `asanlab soak`.
 *
 * On each profile request of the soak, the PHP thread counts what every root of the PHP heap
 * holds: each global variable, each static property of a user class, each static variable of a
 * user function or method. For each root, its elements (an array's count, an object's properties)
 * and its bytes (what is reachable from it and from no root counted before it: strings, arrays,
 * objects, what objects hold as the garbage collector sees it). For an object root and a small
 * array with string keys, each property or entry is counted on its own too: `$app->cache`. The host
 * diffs the counts between checkpoints (asanlab/soak/report.py): the holder whose count grows per
 * request is named by its path.
 *
 * A census reads PHP's data, so it runs in the PHP thread, between two opcodes: the agent's thread
 * asks for it through EG(vm_interrupt), as PHP's own timeouts do, and zend_interrupt_function runs
 * it at the next function call or loop of the running code (the next request, for an idle worker).
 * A process that runs no PHP after the request (an idle task worker) writes no census.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent-php.h"

#include "php-census.h"

#if defined(ASANLAB_WITH_PHP) && !defined(ZTS)

/* PHP's globals through pointers found with dlsym: the header macros would otherwise name the
 * symbols, and the agent could not load in programs that are not PHP. */
static zend_executor_globals *eg;
static zend_compiler_globals *cg;
#undef EG
#define EG(v) (eg->v)
#undef CG
#define CG(v) (cg->v)

static void (**interrupt_hook)(zend_execute_data *);
static void (*previous_hook)(zend_execute_data *);
static char path[512];
static volatile long wanted, done; /* census sequence numbers: asked by the host, written */

/* ---- visited set: each refcounted value is counted under the first root that reaches it ----
 * Open addressing in mmap'd memory, doubled when half full and unmapped after each census: the
 * census adds nothing to the heap it measures, and holds no memory between censuses (16 bytes per
 * value at the largest, 64 KiB for a small app). */
#define FIRST_BITS 13
#define MAX_BITS 24
static uintptr_t *visited;
static unsigned bits, visits;
static int truncated;

static uintptr_t *table_of(unsigned b) {
    void *p = mmap(NULL, sizeof(uintptr_t) << b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void insert(uintptr_t *table, unsigned b, uintptr_t key) {
    size_t i = (size_t)((key >> 3) * 0x9e3779b97f4a7c15ULL >> (64 - b));
    while (table[i]) i = (i + 1) & (((size_t)1 << b) - 1);
    table[i] = key;
}

static int first_visit(const void *p) {
    uintptr_t key = (uintptr_t)p;
    if (!visited) {
        truncated = 1;
        return 0;
    }
    size_t i = (size_t)((key >> 3) * 0x9e3779b97f4a7c15ULL >> (64 - bits));
    while (visited[i]) {
        if (visited[i] == key) return 0;
        i = (i + 1) & (((size_t)1 << bits) - 1);
    }
    if (visits + 1 > (1u << bits) / 2) {
        uintptr_t *bigger = bits < MAX_BITS ? table_of(bits + 1) : NULL;
        if (!bigger) { /* the census stops counting here, and says so */
            truncated = 1;
            return 0;
        }
        for (size_t j = 0; j < ((size_t)1 << bits); j++)
            if (visited[j]) insert(bigger, bits + 1, visited[j]);
        munmap(visited, sizeof(uintptr_t) << bits);
        visited = bigger;
        bits++;
    }
    insert(visited, bits, key);
    visits++;
    return 1;
}

static size_t measure_zval(zval *v, int depth);

static size_t measure_table(HashTable *ht, int depth) {
    if (!ht || !first_visit(ht)) return 0;
    size_t bytes = sizeof(HashTable);
    if (HT_FLAGS(ht) & HASH_FLAG_UNINITIALIZED) return bytes;
    bytes += HT_SIZE(ht);
    zend_string *key;
    zval *v;
    ZEND_HASH_FOREACH_STR_KEY_VAL(ht, key, v) {
        if (key && !ZSTR_IS_INTERNED(key) && first_visit(key)) bytes += _ZSTR_STRUCT_SIZE(ZSTR_LEN(key));
        bytes += measure_zval(v, depth + 1);
    } ZEND_HASH_FOREACH_END();
    return bytes;
}

static size_t measure_object(zend_object *obj, int depth) {
    if (!first_visit(obj)) return 0;
    size_t bytes = sizeof(zend_object) + sizeof(zval) * (size_t)obj->ce->default_properties_count;
    /* What the object holds, as the garbage collector sees it: properties, a closure's bound
     * variables and $this, an ArrayObject's storage... */
    if (obj->handlers && obj->handlers->get_gc) {
        zval *table = NULL;
        int n = 0;
        HashTable *ht = obj->handlers->get_gc(obj, &table, &n);
        for (int i = 0; i < n; i++) bytes += measure_zval(&table[i], depth + 1);
        bytes += measure_table(ht, depth);
    }
    return bytes;
}

static size_t measure_zval(zval *v, int depth) {
    if (depth > 64) return 0; /* deeper than any real data: a chain, counted that far */
    ZVAL_DEREF(v);
    if (Z_TYPE_P(v) == IS_INDIRECT) v = Z_INDIRECT_P(v);
    switch (Z_TYPE_P(v)) {
        case IS_STRING:
            if (ZSTR_IS_INTERNED(Z_STR_P(v)) || !first_visit(Z_STR_P(v))) return 0;
            return _ZSTR_STRUCT_SIZE(Z_STRLEN_P(v));
        case IS_ARRAY:
            /* Immutable arrays (literals, the empty array) are not the heap's: shared, never freed. */
            return (GC_FLAGS(Z_ARR_P(v)) & IS_ARRAY_IMMUTABLE) ? 0 : measure_table(Z_ARRVAL_P(v), depth);
        case IS_OBJECT:
            return measure_object(Z_OBJ_P(v), depth);
        default:
            return 0;
    }
}

static long elements_of(zval *v) {
    ZVAL_DEREF(v);
    if (Z_TYPE_P(v) == IS_INDIRECT) v = Z_INDIRECT_P(v);
    switch (Z_TYPE_P(v)) {
        case IS_ARRAY: return (long)zend_hash_num_elements(Z_ARRVAL_P(v));
        case IS_STRING: return (long)Z_STRLEN_P(v);
        case IS_OBJECT: {
            zend_object *o = Z_OBJ_P(v);
            return o->properties ? (long)zend_hash_num_elements(o->properties) : o->ce->default_properties_count;
        }
        default: return 0;
    }
}

/* ---- output: stdio is fine here (the PHP thread, outside the allocator's hooks) -------------- */
static FILE *out;

static void write_holder(const char *kind, const char *name, zval *v) {
    long n = elements_of(v);
    size_t bytes = measure_zval(v, 0);
    fprintf(out, "holder %s\t%s\t%ld\t%zu\n", kind, name, n, bytes);
}

static int is_small_array(zval *v) {
    ZVAL_DEREF(v);
    if (Z_TYPE_P(v) == IS_INDIRECT) v = Z_INDIRECT_P(v);
    return Z_TYPE_P(v) == IS_ARRAY && zend_hash_num_elements(Z_ARRVAL_P(v)) <= 64;
}

/* A holder, and for an object or a small string-keyed array, each of its members on its own line
 * first (so each member's bytes are its own, and the holder's line adds only the rest). A member
 * that is itself a small string-keyed array is taken apart once more (`$events->listeners['order']`:
 * a list of listeners per event grows one level down). */
static void census_holder(const char *kind, const char *name, zval *v, int depth) {
    zval *d = v;
    ZVAL_DEREF(d);
    if (Z_TYPE_P(d) == IS_INDIRECT) d = Z_INDIRECT_P(d);
    HashTable *members = NULL;
    const char *sep = NULL;
    if (Z_TYPE_P(d) == IS_OBJECT && Z_OBJ_P(d)->handlers->get_properties) {
        members = Z_OBJ_P(d)->handlers->get_properties(Z_OBJ_P(d));
        sep = "->";
    } else if (Z_TYPE_P(d) == IS_ARRAY && zend_hash_num_elements(Z_ARRVAL_P(d)) <= 64) {
        members = Z_ARRVAL_P(d);
        sep = "[";
    }
    if (members) {
        zend_string *key;
        zval *m;
        char child[384];
        ZEND_HASH_FOREACH_STR_KEY_VAL(members, key, m) {
            if (!key) continue; /* a list: its entries are the root's elements */
            if (Z_TYPE_P(m) == IS_INDIRECT) m = Z_INDIRECT_P(m);
            if (Z_TYPE_P(m) == IS_UNDEF) continue;
            if (ZSTR_VAL(key)[0] == '\0') { /* a private or protected property: "\0Class\0name" */
                const char *last = ZSTR_VAL(key) + 1 + strlen(ZSTR_VAL(key) + 1) + 1;
                if (last < ZSTR_VAL(key) + ZSTR_LEN(key)) {
                    snprintf(child, sizeof child, "%s->%s", name, last);
                    write_holder(kind, child, m);
                    continue;
                }
            }
            if (sep[0] == '[') snprintf(child, sizeof child, "%s['%s']", name, ZSTR_VAL(key));
            else snprintf(child, sizeof child, "%s->%s", name, ZSTR_VAL(key));
            if (depth == 0 && is_small_array(m)) census_holder(kind, child, m, 1);
            else write_holder(kind, child, m);
        } ZEND_HASH_FOREACH_END();
    }
    write_holder(kind, name, v);
}

/* A root: a global, a static property, a function's static variable. */
static void census_root(const char *kind, const char *name, zval *v) { census_holder(kind, name, v, 0); }

static void census_statics(zend_function *f, zend_class_entry *scope) {
    if (f->type != ZEND_USER_FUNCTION || !ZEND_MAP_PTR(f->op_array.static_variables_ptr)) return;
    HashTable *ht = ZEND_MAP_PTR_GET(f->op_array.static_variables_ptr);
    if (!ht) return; /* the function has not run yet */
    zend_string *key;
    zval *v;
    char name[384];
    ZEND_HASH_FOREACH_STR_KEY_VAL(ht, key, v) {
        if (!key) continue;
        snprintf(name, sizeof name, "%s%s%s()::static $%s", scope ? ZSTR_VAL(scope->name) : "", scope ? "::" : "",
                 ZSTR_VAL(f->common.function_name), ZSTR_VAL(key));
        census_root("static-var", name, v);
    } ZEND_HASH_FOREACH_END();
}

/* Swoole's timers alive in this process (Swoole\Timer::stats()['num']), or -1 without Swoole. A
 * timer's callback is held by Swoole, not by a PHP variable: a timer started per request and
 * never cleared shows here. */
static int (*call_function)(zend_fcall_info *, zend_fcall_info_cache *);
static void (*ptr_dtor)(zval *);
static zval *(*str_find)(const HashTable *, const char *, size_t);

static long swoole_timers(void) {
    if (!call_function || !ptr_dtor || !str_find || EG(exception)) return -1;
    zval *found = str_find(EG(class_table), "swoole\\timer", sizeof "swoole\\timer" - 1);
    if (!found) return -1;
    zend_class_entry *ce = Z_PTR_P(found);
    zval *method = str_find(&ce->function_table, "stats", sizeof "stats" - 1);
    if (!method) return -1;
    zval ret;
    ZVAL_UNDEF(&ret);
    zend_fcall_info fci;
    memset(&fci, 0, sizeof fci);
    fci.size = sizeof fci;
    ZVAL_UNDEF(&fci.function_name);
    fci.retval = &ret;
    zend_fcall_info_cache fcc;
    memset(&fcc, 0, sizeof fcc);
    fcc.function_handler = Z_PTR_P(method);
    fcc.calling_scope = fcc.called_scope = ce;
    long n = -1;
    if (call_function(&fci, &fcc) == SUCCESS && Z_TYPE(ret) == IS_ARRAY) {
        zval *num = str_find(Z_ARRVAL(ret), "num", sizeof "num" - 1);
        if (num && Z_TYPE_P(num) == IS_LONG) n = (long)Z_LVAL_P(num);
    }
    ptr_dtor(&ret);
    return n;
}

static void census(long seq) {
    bits = FIRST_BITS;
    visited = table_of(bits);
    visits = 0;
    truncated = 0;
    out = fopen(path, "ae");
    if (!out) {
        if (visited) munmap(visited, sizeof(uintptr_t) << bits);
        visited = NULL;
        return;
    }
    fprintf(out, "census %ld\n", seq);
    zend_string *key;
    zval *v;
    char name[384];
    /* Globals. The superglobals are PHP's own, rebuilt per request: left out. */
    ZEND_HASH_FOREACH_STR_KEY_VAL(&EG(symbol_table), key, v) {
        if (!key || ZSTR_VAL(key)[0] == '_' || strcmp(ZSTR_VAL(key), "GLOBALS") == 0) continue;
        if (Z_TYPE_P(v) == IS_INDIRECT) v = Z_INDIRECT_P(v);
        if (Z_TYPE_P(v) == IS_UNDEF) continue;
        snprintf(name, sizeof name, "$%s", ZSTR_VAL(key));
        census_root("global", name, v);
    } ZEND_HASH_FOREACH_END();
    /* Static properties and static variables of methods, for user classes (an alias's entry
     * names its class under another key: counted once, under the class's own name). */
    zend_class_entry *ce;
    ZEND_HASH_FOREACH_STR_KEY_PTR(EG(class_table), key, ce) {
        if (ce->type != ZEND_USER_CLASS || !key || strcasecmp(ZSTR_VAL(key), ZSTR_VAL(ce->name)) != 0) continue;
        if (ce->default_static_members_count && ZEND_MAP_PTR(ce->static_members_table)) {
            zval *table = CE_STATIC_MEMBERS(ce);
            zend_property_info *info;
            if (table) {
                ZEND_HASH_FOREACH_PTR(&ce->properties_info, info) {
                    if (!(info->flags & ZEND_ACC_STATIC) || info->ce != ce) continue;
                    /* A private or protected name is "\0Class\0name" or "\0*\0name". */
                    const char *prop = ZSTR_VAL(info->name);
                    if (prop[0] == '\0' && ZSTR_LEN(info->name) > 1) {
                        const char *second = memchr(prop + 1, '\0', ZSTR_LEN(info->name) - 1);
                        if (second) prop = second + 1;
                    }
                    snprintf(name, sizeof name, "%s::$%s", ZSTR_VAL(ce->name), prop);
                    census_root("static-property", name, &table[info->offset]);
                } ZEND_HASH_FOREACH_END();
            }
        }
        zend_function *m;
        ZEND_HASH_FOREACH_PTR(&ce->function_table, m) {
            if (m->common.scope == ce) census_statics(m, ce);
        } ZEND_HASH_FOREACH_END();
    } ZEND_HASH_FOREACH_END();
    zend_function *f;
    ZEND_HASH_FOREACH_PTR(EG(function_table), f) {
        census_statics(f, NULL);
    } ZEND_HASH_FOREACH_END();
    long timers = swoole_timers();
    if (timers >= 0) fprintf(out, "holder swoole-timers\tSwoole timers (Swoole\\Timer::stats())\t%ld\t0\n", timers);
    fprintf(out, "end %u%s\n", visits, truncated ? " truncated" : "");
    fclose(out);
    if (visited) munmap(visited, sizeof(uintptr_t) << bits);
    visited = NULL;
}

static int installed, calling_previous;

static void on_interrupt(zend_execute_data *execute_data) {
    /* Called back by the hook it calls: Swoole's coroutine hook saves and restores the hook it
     * found, so the chain can become a loop. Once round is enough. */
    if (calling_previous) return;
    long seq = wanted;
    if (seq > done) {
        done = seq;
        census(seq);
    }
    calling_previous = 1;
    if (previous_hook) previous_hook(execute_data);
    calling_previous = 0;
}

/* From PHP's thread, once, after PHP's start-up (which empties zend_interrupt_function): an
 * extension that hooks it later (Swoole, as each worker starts its coroutines) calls this one in
 * turn. Never from the agent's thread, and never again: re-installing over a hook that saved this
 * one would make the two call each other. */
void php_census_install(void) {
    if (installed || !interrupt_hook || !eg || !path[0]) return;
    previous_hook = *interrupt_hook;
    *interrupt_hook = on_interrupt;
    installed = 1;
}

void php_census_start(const char *folder) {
    eg = (zend_executor_globals *)dlsym(RTLD_DEFAULT, "executor_globals");
    cg = (zend_compiler_globals *)dlsym(RTLD_DEFAULT, "compiler_globals");
    interrupt_hook = (void (**)(zend_execute_data *))dlsym(RTLD_DEFAULT, "zend_interrupt_function");
    call_function = dlsym(RTLD_DEFAULT, "zend_call_function");
    ptr_dtor = dlsym(RTLD_DEFAULT, "zval_ptr_dtor");
    str_find = dlsym(RTLD_DEFAULT, "zend_hash_str_find");
    if (!eg || !cg || !interrupt_hook) return;
    snprintf(path, sizeof path, "%s/php-census.%d", folder, (int)getpid());
}

void php_census_child(const char *folder) {
    if (!interrupt_hook) return;
    snprintf(path, sizeof path, "%s/php-census.%d", folder, (int)getpid());
}

/* From the agent's thread: the PHP thread takes the census at its next interrupt check. */
void php_census_request(long seq) {
    if (!installed) return; /* PHP never finished its start-up here */
    wanted = seq;
#if PHP_VERSION_ID >= 80200
    zend_atomic_bool_store_ex(&EG(vm_interrupt), true);
#else
    EG(vm_interrupt) = 1;
#endif
}

#else
void php_census_start(const char *folder) { (void)folder; }
void php_census_child(const char *folder) { (void)folder; }
void php_census_request(long seq) { (void)seq; }
void php_census_install(void) {}
#endif
