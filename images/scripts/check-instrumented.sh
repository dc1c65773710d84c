#!/bin/sh
# Prove an image is instrumented: every binary carries ASan's checks, and the canaries are caught;
# in an image with debugging tools, that they are there and work.
# Prints "key value" lines that asanlab reads; never fails by itself.
# usage: check-instrumented.sh EXTENSION...
set -u
count() { LC_ALL=C grep -a -o '__asan_report_[a-z_]*[0-9]*' "$1" 2>/dev/null | wc -l; }
echo "binary /opt/php/bin/php $(count /opt/php/bin/php)"
for so in $(find /opt/php/lib/php/extensions -name '*.so' 2>/dev/null); do
  echo "binary $so $(count "$so")"
done
for ext in "$@"; do
  if php --ri "$ext" > /tmp/ri.txt 2>&1; then echo "ri $ext ok"; else echo "ri $ext failed"; sed 's/^/ri-output /' /tmp/ri.txt; fi
done
mkdir -p /tmp/canary
# A leak of a size nothing else allocates, and a write past the end of a heap block, both through FFI.
ASAN_OPTIONS="detect_leaks=1:log_path=/tmp/canary/leak" php -r \
  '$f = FFI::cdef("void *malloc(size_t);"); $f->malloc(4243); echo "leak-ran\n";'
echo "leak-exit $?"
cat /tmp/canary/leak.* 2>/dev/null | grep -m1 -o 'Direct leak of 4243 byte' | sed 's/^/leak-report /'
ASAN_OPTIONS="detect_leaks=0:log_path=/tmp/canary/overflow" php -r \
  '$f = FFI::cdef("void *malloc(size_t); void *memset(void *, int, size_t);"); $p = $f->malloc(8); $f->memset($p, 0, 24);'
echo "overflow-exit $?"
cat /tmp/canary/overflow.* 2>/dev/null | grep -m1 -o 'AddressSanitizer: heap-buffer-overflow' | sed 's/^/overflow-report /'
# The debugging tools the recipe asked for (ASANLAB_TOOLS): installed, gdb's helpers beside them,
# and Valgrind finding a 4243-byte leak through FFI.
for tool in ${ASANLAB_TOOLS:-}; do
  if command -v "$tool" >/dev/null 2>&1; then echo "tool $tool ok"; else echo "tool $tool missing"; fi
done
for f in /opt/asanlab/gdb/*.gdbinit; do [ -f "$f" ] && echo "gdbinit $(basename "$f" .gdbinit) ok"; done
case " ${ASANLAB_TOOLS:-} " in *" valgrind "*)
  USE_ZEND_ALLOC=0 ZEND_DONT_UNLOAD_MODULES=1 valgrind -q --leak-check=full --xml=yes \
    --xml-file=/tmp/canary/valgrind.xml php -r '$f = FFI::cdef("void *malloc(size_t);"); $f->malloc(4243);' \
    >/dev/null 2>&1
  grep -q '<leakedbytes>4243</leakedbytes>' /tmp/canary/valgrind.xml 2>/dev/null && echo "valgrind-leak-report 4243"
  ;;
esac
exit 0
