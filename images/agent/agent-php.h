/* asanlab agent: PHP's headers, for the parts that read PHP's data. Built against the image's own
 * PHP (images/Dockerfile.j2, -DASANLAB_WITH_PHP). php.h maps snprintf and vsnprintf to PHP's own
 * functions: the agent is preloaded into programs without PHP too (the symbolizer, shells), which
 * must not need PHP's symbols to start, so the libc ones are used. */
#pragma once

#ifdef ASANLAB_WITH_PHP
#include "php.h"
#undef snprintf
#undef vsnprintf
#undef sprintf
#undef strlcpy
#endif
