"""Swoole's older release line on the suite's PHP: it builds through its release URL, passes the
instrumentation check, serves requests in process mode with coroutines on, and a double free in a
coroutine handler is reported. The full suite runs on the main version (test_swoole.py)."""

import json
import os
import subprocess
import sys

import pytest
import requests

from .conftest import containers_of, free_port, remove_images, serving, stop_run, wait_http
from .test_swoole import assert_double_free_named

pytestmark = [pytest.mark.docker, pytest.mark.swoole]

SERVER = """<?php
// Swoole's defaults as users run them: process mode, coroutines on, two workers.
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, SWOOLE_PROCESS);
$server->set(["worker_num" => 2, "log_level" => SWOOLE_LOG_WARNING]);
$server->on("request", function ($request, $response) use ($libc) {
    if ($request->server["request_uri"] === "/crash") {
        $p = $libc->malloc(16);
        $libc->free($p);
        $libc->free($p);
    }
    $response->end(SWOOLE_VERSION . " " . PHP_VERSION . " openssl=" . (defined("SWOOLE_SSL") ? "yes" : "no"));
});
$server->start();
"""


# Swoole 6.2.2 is not built here on PHP 8.2: the whole Swoole suite runs it on PHP 8.4
# (recipes/php8.4-swoole6.2.yml in test_swoole.py), and each Swoole build costs CI minutes.
# 5.1 asks for --enable-openssl (6.2 dropped it).
@pytest.mark.parametrize("version,configure", [("5.1.8", ["--enable-openssl", "--enable-sockets"])])
def test_swoole_release_builds_and_reports(work, swoole_source, docker_client, version, configure):
    folder, env = work
    source = swoole_source(version)
    env = {**env, **source.env()}
    name = f"e2e-swoole-{version.replace('.', '-')}"
    recipe = f"{name}.yml"
    php_recipe = (folder / "php.yml").read_text().replace("name: e2e-php", f"name: {name}")
    (folder / recipe).write_text(php_recipe + source.recipe_lines(folder, configure))
    remove_images(docker_client, name)
    build = subprocess.run([sys.executable, "-m", "asanlab", "build", recipe], cwd=folder, env={**os.environ, **env},
                           capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, f"Swoole {version} from {source.how}:\n{build.stderr[-3000:]}"
    assert "instrumentation check passed" in build.stderr
    app = folder / f"smoke-{version}"
    app.mkdir(exist_ok=True)
    (app / "server.php").write_text(SERVER)
    # A clean run first: nothing but start-up in any process (master, manager, workers), exit 0,
    # with run's default unwinder (frame pointers).
    port = free_port()
    with serving(folder, env, f"{app.name}/server.php", "--recipe", recipe, "-p", f"{port}:9501", "--format", "json",
                 "--grace", "30", url=f"http://127.0.0.1:{port}/", ready_within=180) as proc:
        with requests.Session() as s:
            for _ in range(20):
                assert s.get(f"http://127.0.0.1:{port}/", timeout=10).text.startswith(version)
        out, err = stop_run(proc, timeout=180)
    clean = json.loads(out)
    failing = [(f["category"], f["signature"], f["pids"]) for f in clean["findings"] if f["category"] != "startup-leak"]
    assert proc.returncode == 0 and failing == [], (failing, err[-3000:])
    assert clean["session"]["stacks"] == "fast"

    port = free_port()
    with serving(folder, env, f"{app.name}/server.php", "--recipe", recipe, "-p", f"{port}:9501", "--format", "json",
                 "--grace", "30", url=f"http://127.0.0.1:{port}/", ready_within=180) as proc:
        answer = requests.get(f"http://127.0.0.1:{port}/", timeout=10).text
        assert answer.startswith(f"{version} 8.2.") and answer.endswith("openssl=yes"), answer
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/crash", timeout=10)  # the worker dies mid-request
        wait_http(f"http://127.0.0.1:{port}/", 60)  # the manager started a new worker
        out, err = stop_run(proc, timeout=180)
    assert proc.returncode == 1, err[-3000:]
    result = json.loads(out)
    assert_double_free_named(result, SERVER, coroutine=True)
    assert containers_of(docker_client, result["session"]["id"]) == []
