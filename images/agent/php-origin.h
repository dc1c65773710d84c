/* asanlab agent: the PHP code that allocated each block alive at exit (php-origin.c). */
#pragma once

void php_origin_start(const char *dir); /* in the PHP thread, at start: dir is where to write */
