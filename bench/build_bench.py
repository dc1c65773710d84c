"""Build benchmarks, all measured in this one run (run with `make bench`):

1. cold build of the PHP-only recipe through `asanlab build --no-cache` vs a plain
   `docker build --no-cache` of the same rendered Dockerfile and context (classic builder for both):
   target ratio <= 1.05 (asanlab's own work: download check, streaming, instrumentation check).
   Both builds fetch Debian packages from the mirror, and one cold build here varied by more than
   the 5% being measured, so they run ROUNDS times (2 by default) in the order plain, asanlab,
   asanlab, plain, ...: a slow mirror or a busy minute hits both; the ratio is of medians;
2. the unchanged recipe built again: target < 2 s;
3. only Swoole's version changed vs the cold build of the same recipe (PHP and Swoole, --no-cache):
   target <= 0.5 (needs ASANLAB_TEST_SWOOLE_SRC and ASANLAB_TEST_SWOOLE_SRC_2, two Swoole source
   tarballs; skipped, saying so, without them).

Prints one line per measurement with its ratio against the baseline measured here.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "php8.2.yml"
ROUNDS = int(os.environ.get("ROUNDS", "2"))
# Which parts to run: "cold" (the PHP-only pair and the no-op rebuild), "swoole", or both.
PARTS = os.environ.get("PARTS", "cold,swoole").split(",")


def timed(cmd: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=True, **kwargs)
    return time.monotonic() - started


def asanlab(*args: str, env: dict | None = None) -> float:
    return timed([sys.executable, "-m", "asanlab", *args], env={**os.environ, **(env or {})},
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def plain_docker_build(recipe: Path, tag: str) -> float:
    from asanlab.image import recipe as recipes, render, sources

    r = recipes.load(recipe)
    rendered = render.render(r, sources.fetch_all(r))
    with tempfile.TemporaryDirectory() as d:
        with tarfile.open(fileobj=rendered.context_tar()) as tar:
            tar.extractall(d)
        return timed(["docker", "build", "--no-cache", "--network", "default", "-t", tag, d],
                     env={**os.environ, "DOCKER_BUILDKIT": "0"}, stdout=subprocess.DEVNULL)


def check_seconds(recipe: Path, image: str) -> float:
    """asanlab's instrumentation check of the built image, run again on its own to show its share."""
    import docker

    from asanlab.image import check, recipe as recipes

    started = time.monotonic()
    result = check.run_checks(docker.from_env(), image, recipes.load(recipe))
    assert result.ok, result.failures
    return time.monotonic() - started


def tarball_version(tarball: str, fallback: str) -> str:
    """The version in a name like swoole-6.1.9.tar.gz, so that the bench's recipes say which it built."""
    found = re.search(r"(\d+\.\d+\.\d+)", Path(tarball).name)
    return found.group(1) if found else fallback


def swoole_recipe(folder: Path, version: str, tarball: str) -> Path:
    shutil.copyfile(tarball, folder / f"swoole-{version}.tar.gz")
    path = folder / f"swoole-{version}.yml"
    path.write_text(f'name: bench-swoole\nphp:\n  version: "8.2"\n  source:\n    debian: php8.2\n'
                    f'swoole:\n  version: "{version}"\n  source:\n    path: swoole-{version}.tar.gz\n')
    return path


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # the log shows each figure when it is measured
    state = Path(tempfile.mkdtemp(prefix="asanlab-bench-"))
    env = {"ASANLAB_HOME": str(state / "home"), "ASANLAB_CACHE": str(state / "cache")}
    os.environ.update(env)
    try:
        base = mid = None
        if "cold" in PARTS:
            plain: list[float] = []
            cold: list[float] = []
            for i in range(ROUNDS):
                pair = [("plain", lambda: plain_docker_build(RECIPE, "asanlab-bench/plain:latest")),
                        ("asanlab", lambda: asanlab("build", "--no-cache", str(RECIPE)))]
                for name, run in (pair if i % 2 == 0 else pair[::-1]):
                    seconds = run()
                    (plain if name == "plain" else cold).append(seconds)
                    print(f"  round {i + 1}: {name:<8} {seconds:7.1f} s", flush=True)
            base, mid = statistics.median(plain), statistics.median(cold)
            print(f"baseline  plain docker build --no-cache        {base:7.1f} s   1.00x  (median of {ROUNDS})")
            print(f"cold      asanlab build --no-cache             {mid:7.1f} s   {mid / base:.2f}x  (target <= 1.05x)")
            from asanlab.image import recipe as recipes, render

            image = render.render(recipes.load(RECIPE), None).readable_ref
            print(f"          of which the instrumentation check  {check_seconds(RECIPE, image):7.1f} s")
            again = asanlab("build", str(RECIPE))
            print(f"no-op     asanlab build, recipe unchanged      {again:7.1f} s   {again / base:.3f}x (target < 2 s)")
        swoole = [os.environ.get("ASANLAB_TEST_SWOOLE_SRC"), os.environ.get("ASANLAB_TEST_SWOOLE_SRC_2")]
        if "swoole" in PARTS and all(swoole):
            folder = state / "swoole"
            folder.mkdir()
            versions = [tarball_version(swoole[0], "6.1.0"), tarball_version(swoole[1], "6.1.1")]
            if versions[0] == versions[1]:
                versions = ["6.1.0", "6.1.1"]
            first = swoole_recipe(folder, versions[0], swoole[0])
            second = swoole_recipe(folder, versions[1], swoole[1])
            full = asanlab("build", "--no-cache", str(first))
            print(f"swoole    cold build, PHP and Swoole           {full:7.1f} s"
                  + (f"   {full / base:.2f}x" if base else ""))
            changed = asanlab("build", str(second))
            print(f"swoole    only Swoole's version changed ({versions[0]} -> {versions[1]})")
            print(f"                                               {changed:7.1f} s   {changed / full:.2f}x of its cold "
                  "build (target <= 0.5x)" + (f"; {changed / mid:.2f}x of the PHP-only cold build" if mid else ""))
        elif "swoole" in PARTS:
            print("swoole    skipped: set ASANLAB_TEST_SWOOLE_SRC and ASANLAB_TEST_SWOOLE_SRC_2 to two Swoole tarballs")
    finally:
        subprocess.run(["docker", "rmi", "-f", "asanlab-bench/plain:latest"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
