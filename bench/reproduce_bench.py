"""Minimization against real Swoole (run with `make bench-reproduce`): the issue's three cases, each
recorded by `asanlab run --record` from 1,000 requests on 50 keep-alive connections, then shrunk by
`asanlab reproduce SESSION --minimize FINDING`, as a user runs them:

1. one culprit: GET /fire frees a block twice; target: exactly that request, in at most 3 minutes;
2. two requests that crash only together: GET /arm keeps a block for its connection, GET /boom frees
   it twice; target: exactly those two;
3. a flaky finding: GET /flaky frees twice 3 times in 10 (--tries 10); target: /flaky kept, and the
   kept request's rate said beside the whole recording's.

The baseline, measured in the same run, is one replay of the whole recording in a fresh container
(`reproduce --runs 1`); each minimization is printed as seconds and as a ratio to it.

Swoole's defaults (process mode, two workers, coroutines on). Needs ASANLAB_TEST_SWOOLE_SRC or
../shared/sources/swoole (it builds the speed bench's default recipe), or BENCH_IMAGE: an asanlab
image with Swoole already on this machine. CASES=1,2 runs a subset.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
CASES = [int(x) for x in os.environ.get("CASES", "1,2,3").split(",")]
REQUESTS, CONNECTIONS = 1000, 50
IMAGE_ARGS = ["--image", os.environ["BENCH_IMAGE"]] if os.environ.get("BENCH_IMAGE") else ["--recipe", "bench.yml"]

APP = r"""<?php
// A block freed twice on one path; /arm keeps one per connection for /boom to free twice.
// No library named: the symbols resolve to ASan's malloc and free (libc.so.6's own would bypass ASan).
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");
$server = new Swoole\Http\Server("0.0.0.0", 9501);
$server->set(["worker_num" => 2]);
$armed = [];
$server->on("request", function ($request, $response) use ($libc, &$armed) {
    $path = $request->server["request_uri"];
    $fd = $request->fd;
    if ($path === "/fire" || ($path === "/flaky" && mt_rand(1, 10) <= 3)) {
        $p = $libc->malloc(32);
        $libc->free($p);
        $libc->free($p);
    } elseif ($path === "/arm") {
        $armed[$fd] = $libc->malloc(32);
    } elseif ($path === "/boom" && isset($armed[$fd])) {
        $libc->free($armed[$fd]);
        $libc->free($armed[$fd]);
    }
    $response->end("ok\n");
});
$server->start();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def asanlab(*args: str, cwd: Path, timeout: int = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asanlab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def record(work: Path, special: dict[int, list[str]]) -> tuple[str, dict | None]:
    """A recorded run: 1,000 requests, 20 per keep-alive connection, GET /ok but for `special`
    (connection number -> its paths, sent after its /ok requests). Returns the session and its
    double free's finding (None when it did not happen)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "asanlab", "run", "app.php", *IMAGE_ARGS, "-p",
                             f"{port}:9501", "--record", "--format", "json", "--grace", "30"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/ok", timeout=5)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the app did not answer: {proc.stderr.read()[-2000:]}")
                time.sleep(1)
        per = REQUESTS // CONNECTIONS
        for c in range(CONNECTIONS):
            paths = special.get(c, [])
            with requests.Session() as s:
                for path in ["/ok"] * (per - len(paths)) + paths:
                    try:
                        s.get(f"http://127.0.0.1:{port}{path}", timeout=10)
                    except requests.RequestException:
                        break  # the worker died on it: the connection is gone
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out)
    found = [f for f in result["findings"] if f["kind"] == "double-free"]
    return result["session"]["id"], found[0] if found else None


def main() -> int:
    shared = REPO.parent / "shared" / "sources" / "swoole" / "v6.1.9.tar.gz"
    src = os.environ.get("ASANLAB_TEST_SWOOLE_SRC") or (str(shared) if shared.is_file() else None)
    if not src and not os.environ.get("BENCH_IMAGE"):
        print("skipped: needs ASANLAB_TEST_SWOOLE_SRC (a Swoole source tarball) or ../shared/sources/swoole, "
              "or BENCH_IMAGE")
        return 0
    work = Path(tempfile.mkdtemp(prefix="asanlab-reproduce-bench-"))
    if src:
        shutil.copy(src, work / "swoole.tar.gz")
    (work / "app.php").write_text(APP)
    # The speed bench's default recipe: built once, reused by both benches.
    (work / "bench.yml").write_text(
        "name: bench-speed-o1\nbase_image: debian:bookworm\ncompiler:\n  optimize: 1\n"
        "php:\n  version: \"8.2.32\"\n  debug: false\n  source:\n    debian: php8.2\n"
        "swoole:\n  version: \"6.1.9\"\n  source:\n    path: swoole.tar.gz\n  configure: [--enable-sockets]\n")
    if not os.environ.get("BENCH_IMAGE"):
        built = asanlab("build", "bench.yml", cwd=work)
        if built.returncode != 0:
            print(built.stderr[-3000:])
            return 1
    rng = random.Random(7)
    cases = {1: ("one culprit among 1,000", {rng.randrange(CONNECTIONS): ["/fire"]}, 1, ["GET /fire"]),
             2: ("two requests that crash only together", {rng.randrange(CONNECTIONS): ["/arm", "/ok", "/boom"]}, 1,
                 ["GET /arm", "GET /boom"]),
             3: ("a flaky finding (3 in 10), --tries 10", {rng.randrange(CONNECTIONS): ["/flaky"]}, 10, None)}
    failed = False
    for n in CASES:
        name, special, tries, want = cases[n]
        for _ in range(10):  # a flaky finding is recorded only when it happened
            sid, finding = record(work, special)
            if finding is not None:
                break
        else:
            print(f"{name}: no double free in 10 recorded runs")
            failed = True
            continue
        t0 = time.monotonic()
        once = asanlab("reproduce", sid, "--runs", "1", "--format", "json", "--grace", "30", cwd=work)
        baseline = time.monotonic() - t0
        t0 = time.monotonic()
        shrunk = asanlab("reproduce", sid, "--minimize", finding["id"], "--tries", str(tries), "--format", "json",
                         "--grace", "30", cwd=work)
        took = time.monotonic() - t0
        if shrunk.returncode != 1:
            print(f"{name}: minimization failed (exit {shrunk.returncode}):\n{shrunk.stderr[-3000:]}")
            failed = True
            continue
        kept = json.loads(shrunk.stdout)
        lines = [r["request"] for r in kept["requests"]]
        ok = lines == want if want else ("GET /flaky" in lines and len(lines) <= 2)
        within = took <= 180 if n == 1 else True
        failed |= not ok or not within
        rate = kept["rate"]
        print(f"{name}: {len(lines)} of {REQUESTS} kept {lines} in {took:.0f} s ({kept['replays']} replays, "
              f"{kept['candidates']} candidates); one whole replay {baseline:.0f} s (exit {once.returncode}): "
              f"{took / baseline:.1f}x; rate kept {rate['hits']} of {rate['tries']}, whole recording "
              f"{rate['original_hits']} of {rate['tries']}  [{'met' if ok and within else 'NOT MET'}]")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
