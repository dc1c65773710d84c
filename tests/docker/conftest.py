"""Docker end-to-end tests: a real engine, a real PHP build, real sanitizer reports.

A missing daemon skips these on a developer's machine and FAILS them when CI=true.
"""

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
def php_release(tmp_path_factory):
    """PHP's real release tarball, from Debian's source package, as php.net names it."""
    folder = Path(os.environ.get("ASANLAB_TEST_PHP_DIR") or tmp_path_factory.mktemp("php-source"))
    subprocess.run([str(REPO / "tests" / "fixtures" / "get-php-source.sh"), PHP_PACKAGE, str(folder)], check=True)
    [orig] = sorted(folder.glob(f"{PHP_PACKAGE}_*.orig.tar.xz"))
    version = re.search(r"_(\d+\.\d+\.\d+)\.orig", orig.name).group(1)
    served = tmp_path_factory.mktemp("php-mirror")
    shutil.copyfile(orig, served / f"php-{version}.tar.xz")
    return version, served


@pytest.fixture(scope="session")
def mirror(php_release):
    version, folder = php_release

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield version, f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()


@pytest.fixture(scope="session")
def work(tmp_path_factory, mirror, base_image):
    """A user's project folder with a PHP-only recipe and asanlab's state inside it."""
    version, url, _ = mirror
    folder = tmp_path_factory.mktemp("project")
    (folder / "php.yml").write_text(
        f'name: e2e-php\nbase_image: {base_image}\nphp:\n  version: "{version}"\n'
        "sanitizers:\n  address: true\n  leak: true\n  undefined: true\n")
    env = {"ASANLAB_PHP_MIRROR": url, "ASANLAB_CACHE": str(folder / "cache"), "ASANLAB_HOME": str(folder / ".asanlab")}
    return folder, env


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
