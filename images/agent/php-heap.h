/* asanlab agent: PHP heap sites (php-heap.c), called from asanlab-agent.c. */
#pragma once

void php_heap_start(void); /* in the PHP thread, at start */
void php_heap_child(void); /* in a forked child */
void php_heap_fork_prepare(void); /* before fork: no update half-done in another thread */
void php_heap_fork_parent(void); /* after fork, in the parent */
void php_heap_dump(const char *path, long seq); /* from the agent's thread */
