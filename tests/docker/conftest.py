"""Docker end-to-end tests: a real engine, a real PHP build, real sanitizer reports.

A missing daemon skips these on a developer's machine and FAILS them when CI=true.
"""

import contextlib
import functools
import http.server
import json
import threading
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PHP_PACKAGE = "php8.2"
# Swoole's release tarballs kept beside the clone (CI has them): Swoole is in no registry here.
SHARED_SWOOLE = REPO.parent / "shared" / "sources" / "swoole"
SWOOLE_MAIN = "6.1.9"  # the version the whole Swoole suite runs on; others get a smoke test
SWOOLE_RELEASE = "https://github.com/swoole/swoole-src/archive/refs/tags/v{version}.tar.gz"
# The second PHP line: recipes/php8.4-swoole6.2.yml on Debian trixie. Its PHP release is taken from
# Debian's pool by name, not through trixie's index: the index named php8.4 8.4.27-1~deb13u1 for days
# while the pool served none of its files (404). Debian's orig tarball of 8.4.24 is php.net's release
# byte for byte, so asanlab checks it against php.net's published sha256 as it would a download.
PHP84 = "8.4.24"
PHP84_RECIPE = REPO / "recipes" / "php8.4-swoole6.2.yml"


def _daemon_ok() -> tuple[bool, str]:
    try:
        import docker

        docker.from_env().ping()
        return True, ""
    except Exception as e:  # any failure to reach the daemon
        return False, f"{e.__class__.__name__}: {e}"


def pytest_runtest_setup(item):
    if "docker" not in item.keywords:
        return
    ok, why = _daemon_ok()
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the Docker daemon is unreachable: {why}", pytrace=False)
    pytest.skip(f"no Docker daemon ({why})")


@pytest.fixture(scope="session")
def docker_client():
    import docker

    return docker.from_env()


@pytest.fixture(scope="session")
def base_image(docker_client):
    """debian:bookworm, made locally with debootstrap when it is not here (no registry on this machine)."""
    subprocess.run([str(REPO / "images" / "make-base-image.sh"), "bookworm", "debian:bookworm"], check=True)
    return "debian:bookworm"


@pytest.fixture(scope="session")
def trixie_image(docker_client):
    """debian:trixie, made locally like bookworm's when it is not here."""
    subprocess.run([str(REPO / "images" / "make-base-image.sh"), "trixie", "debian:trixie"], check=True)
    return "debian:trixie"


@pytest.fixture(scope="session")
def php84_mirror(tmp_path_factory):
    """ASANLAB_PHP_MIRROR serving PHP 8.4's release tarball, from Debian's pool; and the folder served."""
    import requests

    folder = Path(os.environ.get("ASANLAB_TEST_PHP_DIR") or tmp_path_factory.mktemp("php-source"))
    folder.mkdir(parents=True, exist_ok=True)
    orig = folder / f"php8.4_{PHP84}.orig.tar.xz"
    if not orig.is_file():
        url = f"{os.environ.get('DEBIAN_MIRROR', 'http://deb.debian.org/debian')}/pool/main/p/php8.4/{orig.name}"
        partial = orig.with_suffix(".partial")
        with requests.get(url, stream=True, timeout=60) as got:
            got.raise_for_status()
            with open(partial, "wb") as f:
                for chunk in got.iter_content(1 << 16):
                    f.write(chunk)
        partial.rename(orig)
    served = tmp_path_factory.mktemp("php84-mirror")
    shutil.copyfile(orig, served / f"php-{PHP84}.tar.xz")
    url, server = serve(served)
    yield url, served
    server.shutdown()


@pytest.fixture(scope="session")
def php_release(tmp_path_factory):
    """PHP's real release tarball, from Debian's source package, as php.net names it."""
    folder = Path(os.environ.get("ASANLAB_TEST_PHP_DIR") or tmp_path_factory.mktemp("php-source"))
    subprocess.run([str(REPO / "tests" / "fixtures" / "get-php-source.sh"), PHP_PACKAGE, str(folder)], check=True)
    [orig] = sorted(folder.glob(f"{PHP_PACKAGE}_*.orig.tar.xz"))
    version = re.search(r"_(\d+\.\d+\.\d+)\.orig", orig.name).group(1)
    served = tmp_path_factory.mktemp("php-mirror")
    shutil.copyfile(orig, served / f"php-{version}.tar.xz")
    return version, served


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path):
    """A read-only HTTP server on 127.0.0.1 for a folder; returns (url, server)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture(scope="session")
def mirror(php_release):
    version, folder = php_release
    url, server = serve(folder)
    yield version, url, folder
    server.shutdown()


# The suite's PHP is the built-in default's (asanlab/data/default.yml without its Swoole): Debian's
# php8.2 with its usual modules, from Debian's source package. Every PHP 8.2 test (PHP alone, each
# Swoole version, an extension, `init --from-image`, the default itself) is then a stage on top of one
# PHP stage, compiled once per run, and the suite tests the PHP a user gets by default.
DEFAULT_RECIPE = REPO / "asanlab" / "data" / "default.yml"


def default_recipe() -> dict:
    import yaml

    return yaml.safe_load(DEFAULT_RECIPE.read_text())


def suite_php_recipe(name: str, base_image: str) -> str:
    """The default's PHP alone, as recipe text named `name` (tests append their own blocks)."""
    import yaml

    recipe = default_recipe()
    del recipe["swoole"]
    recipe.update(name=name, base_image=base_image)
    return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False, width=1000)


# The Swoole configure of the default, so the suite's Swoole stage is the default's.
SUITE_SWOOLE_CONFIGURE = default_recipe()["swoole"]["configure"]

# PHP from its release tarball (served on 127.0.0.1 as ASANLAB_PHP_MIRROR, checked against php.net's
# sha256), with few modules: the debug image's (no sanitizers) and the error-path recipes'.
# libssl-dev and PHP's OpenSSL: Swoole 6.2 cannot build without them; libbrotli-dev: Swoole 5.1 and 6.1
# build with brotli when its headers are there (the debug image had it before).
DOWNLOADED_PHP_RECIPE = """name: {name}
base_image: {base_image}
php:
  version: "{version}"
  configure: [--with-openssl]
packages:
  build: [libssl-dev, libbrotli-dev]
"""


@pytest.fixture(scope="session")
def work(tmp_path_factory, mirror, base_image):
    """A user's project folder with the suite's PHP-only recipe (php.yml) and asanlab's state inside it."""
    _, url, _ = mirror
    folder = tmp_path_factory.mktemp("project")
    (folder / "php.yml").write_text(suite_php_recipe("e2e-php", base_image))
    env = {"ASANLAB_PHP_MIRROR": url, "ASANLAB_CACHE": str(folder / "cache"), "ASANLAB_HOME": str(folder / ".asanlab")}
    return folder, env


class SwooleSource:
    """Where a Swoole version's source comes from in the tests, and how a recipe names it."""

    def __init__(self, version: str, how: str, path: Path | None = None, mirror: str | None = None,
                 mirror_folder: Path | None = None) -> None:
        self.version, self.how, self.path = version, how, path
        self.mirror, self.mirror_folder = mirror, mirror_folder  # the URL, and the folder it serves

    def recipe_lines(self, folder: Path, configure: list[str]) -> str:
        """The recipe's swoole: block, for a recipe in folder (a local tarball is copied there:
        recipes may only name sources beside them)."""
        lines = f'swoole:\n  version: "{self.version}"\n'
        if self.path is not None:
            local = f"swoole-src-{self.version}.tar.gz"
            shutil.copyfile(self.path, folder / local)
            lines += f"  source:\n    path: {local}\n"
        return lines + f"  configure: [{', '.join(configure)}]\n"

    def env(self) -> dict[str, str]:
        return {"ASANLAB_SWOOLE_MIRROR": self.mirror} if self.mirror else {}


@pytest.fixture(scope="session")
def swoole_source():
    """swoole_source(version): ASANLAB_TEST_SWOOLE_SRC (a tarball, or a folder of vX.Y.Z.tar.gz);
    else ../shared/sources/swoole served on 127.0.0.1 as ASANLAB_SWOOLE_MIRROR, so the recipe's
    ordinary release URL, its checksum pin and --frozen are what runs; else the real download.
    With none of them reachable the test skips, and under CI=true fails, saying why."""
    servers: dict[Path, str] = {}
    started = []

    def mirror_of(folder: Path) -> str:
        if folder not in servers:
            url, server = serve(folder)
            servers[folder] = url
            started.append(server)
        return servers[folder]

    def find(version: str) -> SwooleSource:
        given = os.environ.get("ASANLAB_TEST_SWOOLE_SRC")
        tarball = f"v{version}.tar.gz"
        # A single tarball serves the version its name says, or the main suite's when it says none.
        named = re.search(r"\d+\.\d+\.\d+", Path(given).name) if given else None
        if given and Path(given).is_file() and (named.group() == version if named else version == SWOOLE_MAIN):
            return SwooleSource(version, f"ASANLAB_TEST_SWOOLE_SRC={given}", path=Path(given).resolve())
        for folder in ([Path(given)] if given and Path(given).is_dir() else []) + [SHARED_SWOOLE]:
            if (folder / tarball).is_file():
                return SwooleSource(version, f"{folder} served on 127.0.0.1", mirror=mirror_of(folder.resolve()),
                                    mirror_folder=folder.resolve())
        import requests

        url = SWOOLE_RELEASE.format(version=version)
        try:
            requests.head(url, timeout=10, allow_redirects=True).raise_for_status()
            return SwooleSource(version, url)
        except requests.RequestException as e:
            why = (f"no source for Swoole {version}: ASANLAB_TEST_SWOOLE_SRC is {given or 'not set'}, "
                   f"{SHARED_SWOOLE / tarball} does not exist, and {url} is unreachable ({e.__class__.__name__}). "
                   "Swoole is in no registry this machine reaches: point ASANLAB_TEST_SWOOLE_SRC at a "
                   "tarball or a folder of vX.Y.Z.tar.gz")
        if os.environ.get("CI") == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)

    yield find
    for server in started:
        server.shutdown()


@pytest.fixture(scope="session")
def swoole_mirror(swoole_source, tmp_path_factory):
    """ASANLAB_SWOOLE_MIRROR serving Swoole's release tarball, and the tarball."""
    source = swoole_source(SWOOLE_MAIN)
    if source.mirror:
        return source.mirror, source.mirror_folder / f"v{SWOOLE_MAIN}.tar.gz"
    folder = tmp_path_factory.mktemp("swoole-mirror")  # a single tarball was named: serve it as a release
    shutil.copyfile(source.path, folder / f"v{SWOOLE_MAIN}.tar.gz")
    url, _ = serve(folder)
    return url, folder / f"v{SWOOLE_MAIN}.tar.gz"


def php_modules(docker_client, image: str) -> set[str]:
    out = docker_client.containers.run(image, ["php", "-m"], entrypoint=[], remove=True,
                                       environment={"ASAN_OPTIONS": "detect_leaks=0"}).decode()
    php_part = out.split("[Zend Modules]")[0]
    return {line.strip() for line in php_part.splitlines() if line.strip() and not line.startswith("[")}


def swoole_features(docker_client, image: str) -> dict[str, str]:
    """`php --ri swoole`'s rows up to its ini directives, but when it was built."""
    out = docker_client.containers.run(image, ["php", "--ri", "swoole"], entrypoint=[], remove=True,
                                       environment={"ASAN_OPTIONS": "detect_leaks=0"}).decode()
    rows = {}
    for line in out.split("Directive =>")[0].splitlines():
        key, sep, value = line.partition(" => ")
        if sep and key.strip() != "Built":
            rows[key.strip()] = value.strip()
    return rows


def asanlab(*args, cwd, env=None, timeout=1800, check=None):
    """Run the real command line, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "asanlab", *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"asanlab {' '.join(map(str, args))} exited {proc.returncode}, expected {check}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def containers_of(docker_client, session_id: str):
    return docker_client.containers.list(all=True, filters={"label": f"org.asanlab.session={session_id}"})


def remove_images(docker_client, recipe_name: str) -> None:
    for image in docker_client.images.list(filters={"label": f"org.asanlab.recipe={recipe_name}"}):
        docker_client.images.remove(image.id, force=True)


@contextlib.contextmanager
def without_agent(docker_client, recipe_name: str, tag: str):
    """The recipe's image as an image asanlab did not build would be: its agent label taken away.
    Yields the tag; removes it after."""
    import io

    [image] = docker_client.images.list(filters={"label": f"org.asanlab.recipe={recipe_name}"})
    docker_client.images.build(fileobj=io.BytesIO(f'FROM {image.id}\nLABEL org.asanlab.agent=""\n'.encode()),
                               tag=tag, rm=True)
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


def read_json(path: Path):
    return json.loads(path.read_text())


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float, why_not=lambda: "") -> None:
    """Until url answers 200; fails with why_not() (a log, say) after `seconds`."""
    import time

    import requests

    deadline = time.monotonic() + seconds
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{url} never answered {why_not()}"
        time.sleep(0.3)


@contextlib.contextmanager
def serving(folder: Path, env: dict, *args, url: str, ready_within: float = 120):
    """`asanlab run ARGS` in the background until its app answers `url`: yields the process, whose
    output is piped (`stop_run` reads it). Leaving the block with the run still going (a failed
    assertion) kills it, so no run outlives its test."""
    proc = subprocess.Popen([sys.executable, "-m", "asanlab", "run", *map(str, args)], cwd=folder,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(url, ready_within)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def stop_run(proc: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    """Ctrl-C, as a user stops `asanlab run`; its stdout and stderr."""
    import signal

    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)
