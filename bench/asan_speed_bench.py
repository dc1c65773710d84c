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
(e.g. OPT_LEVELS=1,0 to see what -O0 costs), and with php.debug: true too when DEBUG=1;
6. the PHP 8.4 line (PHP84=0 leaves it out): Debian trixie's PHP 8.4 with Swoole 6.2.2, both -O2,
   against recipes/php8.4-swoole6.2.yml's image (PHP 8.4.24, clang 19) under `run`'s and `soak`'s
   defaults; its ratios are to its own release.
Target: soak within 2.5x of release, run within 4x (ratio of requests per second).

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


PHP84 = "8.4.24"  # a release php.net and Debian's pool both hold: Debian's orig tarball is php.net's


def php84_tarball(work: Path) -> Path:
    """PHP 8.4's release tarball from Debian's pool (php.net is not reachable here), checked against
    php.net's published sha256, as the recipe's `source.sha256` checks it again."""
    import hashlib

    import requests

    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    target = work / f"php-{PHP84}.tar.xz"
    with requests.get(f"{mirror}/pool/main/p/php8.4/php8.4_{PHP84}.orig.tar.xz", stream=True, timeout=60) as got:
        got.raise_for_status()
        with open(target, "wb") as f:
            for chunk in got.iter_content(1 << 16):
                f.write(chunk)
    from asanlab.image.sources import published_php_sha256

    expected = published_php_sha256(PHP84, target.name)
    if hashlib.sha256(target.read_bytes()).hexdigest() != expected:
        raise RuntimeError(f"{target.name} from {mirror} is not php.net's release (sha256)")
    return target


def php84_line(docker, work: Path, build, recipes, agent_env) -> list[tuple]:
    """Release vs `run` vs `soak` on PHP 8.4: the variants, the first being their baseline."""
    swoole = REPO.parent / "shared" / "sources" / "swoole" / "v6.2.2.tar.gz"
    if os.environ.get("PHP84") == "0" or not swoole.is_file():
        print("PHP 8.4 line skipped: PHP84=0, or no ../shared/sources/swoole/v6.2.2.tar.gz")
        return []
    subprocess.run([str(REPO / "images" / "make-base-image.sh"), "trixie", "debian:trixie"], check=True)
    line = work / "php84"
    line.mkdir()
    shutil.copy(swoole, line / "swoole.tar.gz")
    shutil.copy(SPEED / "release.Dockerfile", line / "Dockerfile")
    docker.images.build(path=str(line), tag="asanlab-bench/release84:swoole", rm=True,
                        buildargs={"SUITE": "trixie", "PHP": "8.4", "SWOOLE_CONFIGURE": "--enable-sockets"})
    tarball = php84_tarball(line)
    from asanlab.image.sources import published_php_sha256

    # The shipped recipe, its sources given as the files beside it.
    text = (REPO / "recipes" / "php8.4-swoole6.2.yml").read_text()
    text = text.replace(f'  version: "{PHP84}"\n', f'  version: "{PHP84}"\n  source:\n    path: {tarball.name}\n'
                        f'    sha256: {published_php_sha256(PHP84, tarball.name)}\n', 1)
    text = text.replace('  version: "6.2.2"\n', '  version: "6.2.2"\n  source:\n    path: swoole.tar.gz\n', 1)
    text = text.replace("name: php8.4-swoole6.2", "name: bench-speed-php84", 1)
    (line / "recipe.yml").write_text(text)
    r = recipes.load(line / "recipe.yml")
    image = build(r, agent_env["client"]).image_ref
    run_env, soak_env = agent_env["run"](r, image), agent_env["soak"](r, image)
    return [("release (Debian PHP 8.4 -O2, Swoole 6.2.2 -O2)", "asanlab-bench/release84:swoole", {}, False),
            ("ASan PHP 8.4 -O1 asanlab run's defaults (fast unwinder + agent origins)", image, run_env, False),
            ("ASan PHP 8.4 -O1 asanlab soak + agent sampling", image, soak_env, False)]


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

    def local(env: dict) -> dict:
        env = {**env, "ASAN_OPTIONS": env["ASAN_OPTIONS"].replace("/asanlab/logs/", "/tmp/")}
        env.pop("UBSAN_OPTIONS", None)
        return env

    def origins(agent: str) -> dict:
        return {"LD_PRELOAD": agent, "ASANLAB_PHP_TRACE_DIR": "/tmp", "ASANLAB_PHP_ORIGINS": "1"}

    def run_defaults(r, image: str) -> dict:  # `run` where the image has the agent
        return local({**environment(r, {}, False, FAST_STACKS),
                      **origins(docker.images.get(image).labels.get("org.asanlab.agent"))})

    def soak_defaults(r, image: str) -> dict:
        agent = docker.images.get(image).labels.get("org.asanlab.agent")
        return local({**environment(r, {}, False, {**SOAK_QUARANTINE, **FAST_STACKS}), "LD_PRELOAD": agent,
                      "ASANLAB_AGENT_DIR": "/tmp"})

    for level, debug in BUILDS:
        label = f"-O{level}" + (" debug" if debug else "") + \
            (" (default)" if level == recipes.DEFAULT_OPTIMIZE and not debug else "")
        r, image = images[level, debug]
        # What a soak adds in the app: asanlab's agent preloaded and sampling allocations with
        # their PHP stack (its census and profiles run only at checkpoints, which ab does not ask).
        # What `run` adds: the agent recording which PHP code allocated each block (php-origin.c).
        agent = docker.images.get(image).labels.get("org.asanlab.agent")
        full_env = environment(r, {}, False)  # `run --full-stacks`, and `run` without the agent
        for name, env in (("plain ASan defaults", plain),
                          ("asanlab run's defaults (fast unwinder + agent origins)",
                           run_defaults(r, image) if agent else None),
                          ("asanlab run --full-stacks (+ agent origins)",
                           {**full_env, **origins(agent)} if agent else None),
                          ("asanlab run, an image without the agent", full_env),
                          ("asanlab soak's defaults", environment(r, {}, False, {**SOAK_QUARANTINE, **FAST_STACKS})),
                          ("asanlab soak + agent sampling", soak_defaults(r, image) if agent else None)):
            if env is not None:
                variants.append((f"ASan {label:<19} {name}", image, local(env), False))
        if agent:  # what `run --record` costs on top of `run`
            variants.append((f"ASan {label:<19} asanlab run --record", image, run_defaults(r, image), True))
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
    baseline = [0] * len(variants)  # each variant's release, by index
    more = php84_line(docker, work, build, recipes, {"client": client, "run": run_defaults, "soak": soak_defaults})
    baseline += [len(variants)] * len(more)
    variants += more
    runs: list[list[float]] = [[] for _ in variants]
    for n in range(ROUNDS):
        for i, (_, image, env, record) in enumerate(variants):
            runs[i].append(measure(docker, image, env, commands.get(i, cmd), record,
                                   start_timeout=300 if i in commands else 60))
        print(f"round {n + 1}/{ROUNDS} done", flush=True)
    for i, ((label, _, _, _), rps) in enumerate(zip(variants, runs)):
        release = statistics.median(runs[baseline[i]])
        median = statistics.median(rps)
        print(f"{label:<62} {median:9.0f} req/s  {release / median:5.2f}x  (runs {min(rps):.0f}-{max(rps):.0f})"
              + ("   target <= 2.5x" if "soak" in label else "   target <= 4x" if "run's defaults" in label else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
