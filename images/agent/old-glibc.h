/* Included only by the crash handler's build (images/crash-handler.Dockerfile.j2, gcc -include), for
 * images asanlab did not build, whose glibc may be older than the helper image's. glibc 2.32 and 2.34
 * gave these functions new symbol versions when they moved into libc.so.6; every glibc since 2.2.5
 * still provides the first ones. Bound to those (with libpthread and libdl linked, where an older
 * glibc defines them), the library needs nothing newer than glibc 2.17 (clock_gettime). */
#if defined(__x86_64__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.2.5");
__asm__(".symver pthread_join,pthread_join@GLIBC_2.2.5");
__asm__(".symver pthread_attr_setstacksize,pthread_attr_setstacksize@GLIBC_2.2.5");
__asm__(".symver pthread_sigmask,pthread_sigmask@GLIBC_2.2.5");
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#endif
