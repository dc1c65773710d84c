"""Speed under ASan (run with `make bench-speed`): a Swoole hello-world server, one worker,
coroutines on, measured with `ab -k -c 32` in this one run:

1. release: Debian's PHP 8.2 (-O2) with Swoole -O2 (bench/speed/release.Dockerfile), the baseline;
2. ASan, plain defaults: asanlab's image, only USE_ZEND_ALLOC=0 and a log_path;
3. ASan, asanlab's runtime defaults: the environment `asanlab run` sets where the image has
   asanlab's agent (frame-pointer unwinder, the agent recording which PHP code allocated each
   block), `run --full-stacks` (ASan's slow unwinder on every malloc, for complete allocation stacks;
   also what `run` sets in an image without the agent), the one `asanlab soak` sets (frame
   pointers, a smaller quarantine), and soak's with asanlab's agent sampling allocations;
4. `run --record`: the same requests through asanlab's recording proxy (asanlab/run/proxy.py), in front of
   release (what the proxy alone can carry) and of `run`'s ASan variant (what recording costs);
5. with VALGRIND=1: asanlab's debug image (`tools: [valgrind]`: -g, no sanitizers) alone, and under
   the memcheck command line `run --valgrind` uses (asanlab/run/valgrind.py); ASAN=0 leaves the
   ASan images out;
for the default recipe (compiler.optimize: 1, php.debug: false), at the -O levels in OPT_LEVELS
(e.g. OPT_LEVELS=1,0 to see what -O0 costs), and with php.debug: true too when DEBUG=1. Target:
soak within 2.5x of release, run within 4x (ratio of requests per second).

Client and server share two cores, and one measurement of the same image varied by 1.7x here, so
every variant is measured ROUNDS times (5 by default), the variants interleaved round by round so
that a slow minute hits them all, and the ratio is of medians.

Needs ASANLAB_TEST_SWOOLE_SRC (a Swoole source tarball: Swoole is in no registry here) and `ab`
(Debian's apache2-utils); says so and stops without them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEED = REPO / "bench" / "speed"
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
OPT_LEVELS = [int(x) for x in os.environ.get("OPT_LEVELS", "1").split(",")]
BUILDS = [(level, False) for level in OPT_LEVELS] + ([(level, True) for level in OPT_LEVELS]
                                                    if os.environ.get("DEBUG") == "1" else [])
if os.environ.get("ASAN") == "0":  # with VALGRIND=1: release, the debug image and memcheck only
    BUILDS = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ab(port: int, n: int) -> float:
    out = subprocess.run(["ab", "-q", "-k", "-c", "32", "-n", str(n), f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    if failed:
        raise RuntimeError(f"ab: {failed} failed requests")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))


def measure(client, image: str, env: dict[str, str], cmd: list[str], record: bool = False,
            start_timeout: float = 60) -> float:
    """ab against the app; with `record`, through asanlab's recording proxy (run --record)."""
    port = free_port()
    c = client.containers.run(image, cmd, detach=True, environment=env, ports={"9501/tcp": ("127.0.0.1", port)},
                              volumes={str(SPEED): {"bind": "/app", "mode": "ro"}}, labels={"org.asanlab.role": "bench"},
                              cap_add=["SYS_PTRACE"])
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if s.recv(64):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{image} did not answer:\n{c.logs().decode(errors='replace')[-2000:]}")
            time.sleep(0.3)
        recorder = None
        if record:
            from asanlab.run.proxy import Recorder

            target = tempfile.mkdtemp(prefix="asanlab-speed-rec-")
            recorder = Recorder(("127.0.0.1", free_port()), ("127.0.0.1", port), Path(target) / "connections.jsonl")
            recorder.start()
            port = recorder.listen[1]
        try:
            ab(port, max(REQUESTS // 10, 1000))  # warm-up: caches, quarantine
            return ab(port, REQUESTS)
        finally:
            if recorder is not None:
                recorder.stop()
                shutil.rmtree(target, ignore_errors=True)
    finally:
        c.remove(force=True)


def main() -> int:
    # The tests' Swoole release tarball beside the clone (../shared/sources/swoole) when none is named.
    shared = REPO.parent / "shared" / "sources" / "swoole" / "v6.1.9.tar.gz"
    src = os.environ.get("ASANLAB_TEST_SWOOLE_SRC") or (str(shared) if shared.is_file() else None)
    if not src or not shutil.which("ab"):
        print("skipped: needs ASANLAB_TEST_SWOOLE_SRC (a Swoole source tarball) or ../shared/sources/swoole, "
              "and ab (apache2-utils)")
        return 0
    sys.path.insert(0, str(REPO))
    from asanlab.image import recipe as recipes
    from asanlab.image.build import build
    from asanlab.docker_client import client
    from asanlab.run import environment, valgrind
    from asanlab.run.environment import FAST_STACKS, PHP_ENV
    from asanlab.soak.driver import SOAK_QUARANTINE

    work = Path(tempfile.mkdtemp(prefix="asanlab-speed-"))
    shutil.copy(src, work / "swoole.tar.gz")
    shutil.copy(SPEED / "release.Dockerfile", work / "Dockerfile")
    docker = client()
    docker.images.build(path=str(work), tag="asanlab-bench/release:swoole", rm=True)
    images = {}
    for level, debug in BUILDS:
        name = f"o{level}" + ("-debug" if debug else "")
        path = work / f"asan-{name}.yml"
        # The default recipe but for the level and php.debug, Swoole on top.
        path.write_text(f"name: bench-speed-{name}\nbase_image: debian:bookworm\ncompiler:\n  optimize: {level}\n"
                        f"php:\n  version: \"8.2.32\"\n  debug: {str(debug).lower()}\n  source:\n    debian: php8.2\n"
                        "swoole:\n  version: \"6.1.9\"\n  source:\n    path: swoole.tar.gz\n  configure: [--enable-sockets]\n")
        r = recipes.load(path)
        images[level, debug] = (r, build(r, client).image_ref)
    cmd = ["php", "/app/hello.php"]
    plain = {"USE_ZEND_ALLOC": "0", "ASAN_OPTIONS": "log_path=/tmp/asan:detect_leaks=1"}
    variants = [("release (Debian PHP 8.2 -O2, Swoole -O2)", "asanlab-bench/release:swoole", {}, False),
                # What the recording proxy alone can carry: the fastest app behind it.
                ("release through the recording proxy", "asanlab-bench/release:swoole", {}, True)]
    for level, debug in BUILDS:
        label = f"-O{level}" + (" debug" if debug else "") + \
            (" (default)" if level == recipes.DEFAULT_OPTIMIZE and not debug else "")
        r, image = images[level, debug]
        soak_env = environment(r, {}, False, {**SOAK_QUARANTINE, **FAST_STACKS})
        # What a soak adds in the app: asanlab's agent preloaded and sampling allocations with
        # their PHP stack (its census and profiles run only at checkpoints, which ab does not ask).
        agent = docker.images.get(image).labels.get("org.asanlab.agent")
        with_agent = {**soak_env, "LD_PRELOAD": agent, "ASANLAB_AGENT_DIR": "/tmp"} if agent else None
        # What `run` adds: the agent recording which PHP code allocated each block (php-origin.c).
        origins = {"LD_PRELOAD": agent, "ASANLAB_PHP_TRACE_DIR": "/tmp", "ASANLAB_PHP_ORIGINS": "1"}
        run_env = environment(r, {}, False, FAST_STACKS)  # `run` where the image has the agent
        full_env = environment(r, {}, False)  # `run --full-stacks`, and `run` without the agent
        for name, env in (("plain ASan defaults", plain),
                          ("asanlab run's defaults (fast unwinder + agent origins)",
                           {**run_env, **origins} if agent else None),
                          ("asanlab run --full-stacks (+ agent origins)", {**full_env, **origins} if agent else None),
                          ("asanlab run, an image without the agent", full_env),
                          ("asanlab soak's defaults", soak_env),
                          ("asanlab soak + agent sampling", with_agent)):
            if env is None:
                continue
            env = {**env, "ASAN_OPTIONS": env["ASAN_OPTIONS"].replace("/asanlab/logs/", "/tmp/")}
            env.pop("UBSAN_OPTIONS", None)
            variants.append((f"ASan {label:<19} {name}", image, env, False))
        if agent:  # what `run --record` costs on top of `run`
            env = {**run_env, **origins, "ASAN_OPTIONS": run_env["ASAN_OPTIONS"].replace("/asanlab/logs/", "/tmp/")}
            env.pop("UBSAN_OPTIONS", None)
            variants.append((f"ASan {label:<19} asanlab run --record", image, env, True))
    commands = {}  # variant index -> its own command line
    if os.environ.get("VALGRIND") == "1":
        path = work / "debug.yml"
        path.write_text("name: bench-speed-debug\nbase_image: debian:bookworm\n"
                        "php:\n  version: \"8.2.32\"\n  source:\n    debian: php8.2\n"
                        "swoole:\n  version: \"6.1.9\"\n  source:\n    path: swoole.tar.gz\n  configure: [--enable-sockets]\n"
                        "tools: [valgrind]\n")
        debug_image = build(recipes.load(path), client).image_ref
        variants.append(("debug image (-g, no sanitizers)", debug_image, {}, False))
        # run --valgrind's command line and environment; its log folder and suppressions are /tmp's here.
        memcheck = [a.replace("/asanlab/logs/", "/tmp/") for a in valgrind.command(cmd)
                    if not a.startswith("--suppressions=")]
        commands[len(variants)] = memcheck
        variants.append(("debug image under run --valgrind's memcheck", debug_image, dict(PHP_ENV), False))
    runs: list[list[float]] = [[] for _ in variants]
    for n in range(ROUNDS):
        for i, (_, image, env, record) in enumerate(variants):
            runs[i].append(measure(docker, image, env, commands.get(i, cmd), record,
                                   start_timeout=300 if i in commands else 60))
        print(f"round {n + 1}/{ROUNDS} done", flush=True)
    release = statistics.median(runs[0])
    for (label, _, _, _), rps in zip(variants, runs):
        median = statistics.median(rps)
        print(f"{label:<62} {median:9.0f} req/s  {release / median:5.2f}x  (runs {min(rps):.0f}-{max(rps):.0f})"
              + ("   target <= 2.5x" if "soak" in label else "   target <= 4x" if "run's defaults" in label else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
