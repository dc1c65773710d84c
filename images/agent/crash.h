/* asanlab agent: a crashing process's evidence where no sanitizer catches the signal (crash.c). */
#pragma once

#include <stddef.h>

/* Installs the handlers (only on signals whose action is still the default). `dir` is where to
 * write crash.<pid>; `php_block`, when not NULL, writes the PHP stack block under the key given. */
void crash_start(const char *dir, void (*php_block)(const char *key, size_t key_length));
