/* asanlab agent: PHP heap census (php-census.c), called from asanlab-agent.c. */
#pragma once

void php_census_start(const char *folder);   /* in the PHP thread, at start */
void php_census_child(const char *folder);   /* in a forked child */
void php_census_request(long seq);           /* from the agent's thread */
void php_census_install(void);               /* in the PHP thread, once, after PHP's start-up */
