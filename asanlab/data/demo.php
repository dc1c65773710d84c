<?php
// asanlab's demo app: two real C-level bugs, made through PHP's FFI so that the sanitizers see them.
//   - the parent process leaks three 100-byte blocks (LeakSanitizer reports them at exit);
//   - a forked child frees the same block twice (AddressSanitizer stops that child).
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");

function leak_blocks(FFI $libc, int $n): void
{
    for ($i = 0; $i < $n; $i++) {
        $libc->malloc(100); // the pointer is dropped: never freed
    }
}

leak_blocks($libc, 3);

$pid = pcntl_fork();
if ($pid === 0) {
    $p = $libc->malloc(64);
    $libc->free($p);
    $libc->free($p); // double free
    exit(0);
}
pcntl_waitpid($pid, $status);
echo "demo: child ", $pid, " exited with status ", pcntl_wexitstatus($status), "\n";
echo "demo: parent exits now; LeakSanitizer checks for leaks\n";
