/* What the agent's C tests share: a check that counts failures, and a fake PHP frame (an internal
 * function of the given name) for the hooks that read EG(current_execute_data). Included after the
 * agent's source, whose PHP headers it needs. */
#pragma once

#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                         \
            fprintf(stderr, "\n");                                \
            failures++;                                           \
        }                                                         \
    } while (0)

static zend_executor_globals fake_eg;
static zend_function fake_function;
static zend_execute_data fake_frame;
static _Alignas(16) char fake_name[sizeof(zend_string) + 16];

/* Executor globals whose current frame is the internal function `name` (under 16 bytes). */
static zend_executor_globals *fake_php(const char *name) {
    zend_string *s = (zend_string *)fake_name;
    s->len = strlen(name);
    memcpy(ZSTR_VAL(s), name, s->len + 1);
    fake_function.type = ZEND_INTERNAL_FUNCTION;
    fake_function.common.function_name = s;
    fake_frame.func = &fake_function;
    fake_eg.current_execute_data = &fake_frame;
    return &fake_eg;
}

/* The test's verdict, as its exit code. */
static int verdict(const char *what) {
    if (failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", what, failures);
        return 1;
    }
    printf("%s: all checks passed\n", what);
    return 0;
}
