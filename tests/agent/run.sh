#!/bin/sh
# Builds and runs the agent's C tests on the host: under ASan+UBSan, and under ThreadSanitizer for
# the tables other threads read without a lock. Needs clang and PHP's headers (Debian: clang-14,
# php8.2-dev); `make test` installs them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-clang-14}
php_config=${PHP_CONFIG:-$(command -v php-config8.2 || command -v php-config)}
out=${1:-$(mktemp -d)}
for test in "$here"/*_test.c; do
  name=$(basename "$test" .c)
  "$cc" -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -pthread \
    $("$php_config" --includes) -o "$out/$name-asan" "$test" -lm
  "$cc" -g -O1 -fsanitize=thread -pthread $("$php_config" --includes) -o "$out/$name-tsan" "$test" -lm
  echo "== $name (ASan+UBSan)"
  ASAN_OPTIONS=detect_leaks=1 "$out/$name-asan"
  echo "== $name (ThreadSanitizer)"
  TSAN_OPTIONS=halt_on_error=1 "$out/$name-tsan"
done
