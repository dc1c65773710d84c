"""Build benchmarks, all measured in this one run (run with `make bench`):

1. cold build of the PHP-only recipe through `asanlab build --no-cache` vs a plain
   `docker build --no-cache` of the same rendered Dockerfile and context (classic builder for both):
   target ratio <= 1.05 (asanlab's own work: download check, streaming, instrumentation check);
2. the unchanged recipe built again: target < 2 s;
3. only Swoole's version changed vs the cold build: target <= 0.5 (needs ASANLAB_TEST_SWOOLE_SRC
   and ASANLAB_TEST_SWOOLE_SRC_2, two Swoole source tarballs; skipped, saying so, without them).

Prints one line per measurement with its ratio against the baseline measured here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "php8.2.yml"


def timed(cmd: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=True, **kwargs)
    return time.monotonic() - started


def asanlab(*args: str, env: dict | None = None) -> float:
    return timed([sys.executable, "-m", "asanlab", *args], env={**os.environ, **(env or {})},
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def plain_docker_build(recipe: Path, tag: str) -> float:
    from asanlab import recipe as recipes, render, sources

    r = recipes.load(recipe)
    rendered = render.render(r, sources.fetch_all(r))
    with tempfile.TemporaryDirectory() as d:
        with tarfile.open(fileobj=rendered.context_tar()) as tar:
            tar.extractall(d)
        return timed(["docker", "build", "--no-cache", "--network", "default", "-t", tag, d],
                     env={**os.environ, "DOCKER_BUILDKIT": "0"}, stdout=subprocess.DEVNULL)


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="asanlab-bench-"))
    env = {"ASANLAB_HOME": str(state / "home"), "ASANLAB_CACHE": str(state / "cache")}
    os.environ.update(env)
    try:
        base = plain_docker_build(RECIPE, "asanlab-bench/plain:latest")
        print(f"baseline  plain docker build --no-cache        {base:7.1f} s   1.00x")
        cold = asanlab("build", "--no-cache", str(RECIPE))
        print(f"cold      asanlab build --no-cache             {cold:7.1f} s   {cold / base:.2f}x  (target <= 1.05x)")
        again = asanlab("build", str(RECIPE))
        print(f"no-op     asanlab build, recipe unchanged      {again:7.1f} s   {again / base:.3f}x (target < 2 s)")
        swoole = [os.environ.get("ASANLAB_TEST_SWOOLE_SRC"), os.environ.get("ASANLAB_TEST_SWOOLE_SRC_2")]
        if all(swoole):
            folder = state / "swoole"
            folder.mkdir()
            times = []
            for i, src in enumerate(swoole):
                shutil.copyfile(src, folder / f"swoole{i}.tar.gz")
                (folder / "r.yml").write_text(
                    f'name: bench-swoole\nphp:\n  version: "8.2"\n  source:\n    debian: php8.2\n'
                    f'swoole:\n  version: "6.1.{i}"\n  source:\n    path: swoole{i}.tar.gz\n')
                times.append(asanlab("build", str(folder / "r.yml")))
            print(f"swoole    only Swoole's version changed        {times[1]:7.1f} s   {times[1] / cold:.2f}x of cold "
                  "(target <= 0.5x)")
        else:
            print("swoole    skipped: set ASANLAB_TEST_SWOOLE_SRC and ASANLAB_TEST_SWOOLE_SRC_2 to two Swoole tarballs")
    finally:
        subprocess.run(["docker", "rmi", "-f", "asanlab-bench/plain:latest"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
