"""A Swoole HTTP server under asanlab: requests sent, Ctrl-C, leak and crash findings, soaks.

Swoole is in no registry this machine reaches: the source comes from ASANLAB_TEST_SWOOLE_SRC or
../shared/sources/swoole served on 127.0.0.1 (conftest.swoole_source); under CI=true these tests
never skip.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests

from .conftest import (PHP84, PHP84_RECIPE, SUITE_SWOOLE_CONFIGURE, SWOOLE_MAIN, asanlab, free_port, containers_of, php_modules, read_json,
                       remove_images, serving, stop_run, swoole_features)

pytestmark = [pytest.mark.docker, pytest.mark.swoole]

SERVER = """<?php
// Two workers in process mode, coroutines on (Swoole's default) or off (COROUTINE=0): LeakSanitizer
// sees a handler's C leak only with coroutines off (measured by the soak test below).
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");
$server = new Swoole\\Http\\Server("0.0.0.0", 9501);
$server->set(["worker_num" => 2, "enable_coroutine" => getenv("COROUTINE") !== "0", "log_level" => SWOOLE_LOG_WARNING]);
$server->on("request", function ($request, $response) use ($libc) {
    if ($request->server["request_uri"] === "/leak") {
        $libc->malloc(100);
    } elseif ($request->server["request_uri"] === "/crash") {
        $p = $libc->malloc(16);
        $libc->free($p);
        $libc->free($p);
    }
    $response->end("ok\\n");
});
echo "listening\\n";
$server->start();
"""



@pytest.fixture(scope="module")
def swoole_recipe(work, swoole_source, docker_client):
    """The PHP recipe plus Swoole by its release version, configured as the built-in default's (so the
    two images share every stage), built for real: the first download is pinned in the lock file
    beside the recipe, and --frozen then accepts it."""
    folder, env = work
    source = swoole_source(SWOOLE_MAIN)
    env = {**env, **source.env()}
    php_recipe = (folder / "php.yml").read_text().replace("name: e2e-php", "name: e2e-swoole")
    (folder / "swoole.yml").write_text(php_recipe + source.recipe_lines(folder, SUITE_SWOOLE_CONFIGURE))
    (folder / "swoole.lock").unlink(missing_ok=True)
    remove_images(docker_client, "e2e-swoole")  # an image kept from an earlier run: build for real
    build = asanlab("build", "swoole.yml", cwd=folder, env=env, timeout=3600)
    assert build.returncode == 0, f"Swoole {SWOOLE_MAIN} from {source.how}:\n{build.stderr[-3000:]}"
    assert "instrumentation check passed" in build.stderr
    if source.mirror:  # the release-URL path: pinned on first download, by the release URL
        served = source.mirror_folder / f"v{SWOOLE_MAIN}.tar.gz"
        pins = read_json(folder / "swoole.lock")["sources"]
        url = f"https://github.com/swoole/swoole-src/archive/refs/tags/v{SWOOLE_MAIN}.tar.gz"
        assert pins == {url: hashlib.sha256(served.read_bytes()).hexdigest()}, pins
        frozen = asanlab("build", "swoole.yml", "--frozen", cwd=folder, env=env)
        assert frozen.returncode == 0 and "is up to date" in frozen.stderr, frozen.stderr[-2000:]
    return folder, env


@pytest.fixture(scope="module")
def php84_recipe(tmp_path_factory, trixie_image, php84_mirror, swoole_source, docker_client):
    """recipes/php8.4-swoole6.2.yml as shipped (PHP 8.4 on Debian trixie, its clang 19, Swoole 6.2.2),
    built for real: PHP's release downloaded over HTTP and checked against php.net's sha256, the
    build's instrumentation check, and no warning that the agent is untested there."""
    php84_mirror, php84_mirror_folder = php84_mirror
    folder = tmp_path_factory.mktemp("php84")
    source = swoole_source("6.2.2")
    env = {"ASANLAB_PHP_MIRROR": php84_mirror, "ASANLAB_CACHE": str(folder / "cache"),
           "ASANLAB_HOME": str(folder / ".asanlab"), **source.env()}
    text = PHP84_RECIPE.read_text()
    assert f'version: "{PHP84}"' in text and f"base_image: {trixie_image}" in text
    if source.path is not None:  # a local tarball: the recipe names it
        text = re.sub(r"swoole:\n(  .*\n)+", lambda _: source.recipe_lines(folder, ["--enable-sockets"]), text)
    (folder / PHP84_RECIPE.name).write_text(text)
    remove_images(docker_client, "php8.4-swoole6.2")
    build = asanlab("build", PHP84_RECIPE.name, cwd=folder, env=env, timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "instrumentation check passed" in build.stderr and "not tested" not in build.stderr, build.stderr[-3000:]
    assert "step 1/" in build.stderr and list((folder / ".asanlab" / "builds").glob("php8.4-swoole6.2-*.log"))
    tarball = php84_mirror_folder / f"php-{PHP84}.tar.xz"
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert (folder / "cache" / "sources" / digest / tarball.name).is_file()
    assert f"sha256 {digest[:12]} (php.net)" in build.stderr, build.stderr[-3000:]
    [image] = docker_client.images.list(filters={"label": "org.asanlab.recipe=php8.4-swoole6.2"})
    assert image.labels["org.asanlab.digest"].startswith(build.stdout.splitlines()[0].split(":sha-")[1])
    assert any(t.endswith(f":php{PHP84}-swoole6.2.2-asan-ubsan") for t in image.tags), image.tags
    # A whole line: the SDK's logs drop an unterminated last line.
    version = docker_client.containers.run(image.id, ["php", "-r", "echo PHP_VERSION, PHP_EOL;"], entrypoint=[],
                                           remove=True, environment={"ASAN_OPTIONS": "detect_leaks=0"})
    assert version.decode().strip() == PHP84
    return folder, env, PHP84_RECIPE.name


@pytest.fixture
def php_line(request):
    """on_php(line): the project folder, environment and recipe of the suite's PHP 8.2 or PHP 8.4 image."""
    def on_php(line: str) -> tuple[Path, dict, str]:
        if line == "8.4":
            return request.getfixturevalue("php84_recipe")
        folder, env = request.getfixturevalue("swoole_recipe")
        return folder, env, "swoole.yml"
    return on_php


@pytest.mark.parametrize("php,coroutine", [("8.2", "1"), ("8.2", "0"), ("8.4", "1")])
def test_swoole_server_leak_and_worker_crash(php_line, docker_client, php, coroutine):
    """Coroutines on with `run`'s defaults (allocation stacks by frame pointers); coroutines off with
    --full-stacks (ASan's slow unwinder, through libffi). On PHP 8.2 and 8.4."""
    folder, env, recipe_file = php_line(php)
    (folder / "srv").mkdir(exist_ok=True)
    (folder / "srv" / "server.php").write_text(SERVER)
    port = free_port()
    full = ["--full-stacks"] if coroutine == "0" else []
    with serving(folder, env, "srv/server.php", "--recipe", recipe_file, "-p", f"{port}:9501", "-e",
                 f"COROUTINE={coroutine}", "--format", "json", "--grace", "30", *full,
                 url=f"http://127.0.0.1:{port}/") as proc:
        # The crash first: a worker stopped by ASan never writes its leak report, and the master
        # restarts it, so the leaks made afterwards are all reported at shutdown.
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/crash", timeout=10)  # the worker dies mid-request
        time.sleep(2)
        for _ in range(20):
            assert requests.get(f"http://127.0.0.1:{port}/leak", timeout=10).text == "ok\n"
        out, err = stop_run(proc, timeout=180)
    assert proc.returncode == 1, err[-3000:]
    result = json.loads(out)
    assert_double_free_named(result, SERVER, coroutine == "1")
    leaks = [f for f in result["findings"] if f["category"] == "leak" and f["leaked_bytes"] % 100 == 0
             and (any(fr["function"] == "zif_ffi_trampoline" for fr in f["example"]["frames"])
                  or f["cut_short"] == "libffi.so.8")]
    # Frame pointers stop in libffi; the slow unwinder goes through it.
    assert all((f["cut_short"] == "libffi.so.8") == (not full) for f in leaks), leaks
    lsan = sum(f["leaked_bytes"] for f in leaks)
    print(f"coroutine={coroutine}: LeakSanitizer reported {lsan} of the 2000 bytes leaked")
    assert_leak_allocated_in_php(leaks, line_of(SERVER, "$libc->malloc(100);"), SERVER)
    if coroutine == "0":
        assert lsan == 100 * 20, result["findings"]
        # The app's leak comes right after the crash: server set-up and module start-up are folded away.
        assert [f["category"] for f in result["findings"][:2]] == ["error", "leak"]
        assert result["findings"][1]["signature"].startswith("leak | zif_ffi_trampoline")
    assert any(f["category"] == "startup-leak" for f in result["findings"])
    session = result["session"]
    assert any(a["status"] != 0 or a["signal"] != 0 for a in session["abnormal_exits"]), session
    stored = read_json(folder / ".asanlab" / "sessions" / session["id"] / "session.json")
    assert stored["stop_reason"] == "interrupted"
    assert containers_of(docker_client, session["id"]) == []


def is_handler_frame(frame: dict, source: str, line: int, event: str = "request") -> bool:
    """Whether `frame` is the `event` handler's PHP frame at `line`, as the image's PHP names the closure:
    `{closure}` up to 8.3, `{closure:FILE:LINE}` (where it is declared) from 8.4."""
    declared = line_of(source, f'->on("{event}", function')
    return (frame.get("file"), frame.get("line")) == ("/app/server.php", line) and \
        frame.get("function") in ("{closure}", f"{{closure:/app/server.php:{declared}}}")


def assert_leak_allocated_in_php(leaks: list[dict], line: int, source: str) -> None:
    """Each LeakSanitizer leak of the handler names the PHP line that allocated it (the agent's
    record of every allocation, joined with LeakSanitizer's leaked objects), with the whole call path."""
    assert leaks
    for f in leaks:
        php = f["example"]["php"]
        assert php is not None, f
        print("allocated in PHP:", php)
        assert php["frames"][0]["file"] is None, php  # the FFI call: C, called from the handler's line
        assert is_handler_frame(php["frames"][1], source, line), php
        assert php["frames"][-1]["function"] == "{main}", php
        assert php["allocated_objects"] == php["listed_objects"] == f["example"]["leaked_objects"], php


def line_of(source: str, text: str, nth: int = 1) -> int:
    """The line number of the nth line of source containing text."""
    return [n for n, line in enumerate(source.splitlines(), 1) if text in line][nth - 1]


def assert_double_free_named(result: dict, server: str, coroutine: bool) -> None:
    """One double free, its C stack down to the FFI call (across Swoole's coroutine stack), and its
    PHP side from asanlab's agent: the handler's line that freed twice, the request, and the
    coroutine that ran it (with coroutines on)."""
    errors = [f for f in result["findings"] if f["category"] == "error"]
    assert [f["kind"] for f in errors] == ["double-free"], result["findings"]
    assert any(fr["function"] == "zif_ffi_trampoline" for fr in errors[0]["example"]["frames"]), errors[0]
    php = errors[0]["example"]["php"]
    assert php["request"] == "GET /crash", php
    assert (php.get("coroutine") or 0) > 0 if coroutine else php.get("coroutine") is None, php
    assert any(is_handler_frame(fr, server, line_of(server, "$libc->free($p);", 2)) for fr in php["frames"]), php


SOAK_SERVER = """<?php
// A Swoole HTTP server leaking LEAK_BYTES through FFI per request, coroutines on or off (COROUTINE),
// in Swoole's base mode (master and workers) or process mode (master, manager, workers) (MODE),
// with TASK_WORKERS idle task workers.
$leak = (int) getenv("LEAK_BYTES");
$libc = FFI::cdef("void *malloc(size_t);");
$mode = getenv("MODE") === "process" ? SWOOLE_PROCESS : SWOOLE_BASE;
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, $mode);
$server->set(["worker_num" => 2, "enable_coroutine" => getenv("COROUTINE") === "1",
              "max_request" => (int) getenv("MAX_REQUEST"), "log_level" => SWOOLE_LOG_WARNING,
              "task_worker_num" => (int) getenv("TASK_WORKERS")]);
$server->on("task", function ($server, $task_id, $worker_id, $data) { return $data; });
$server->on("request", function ($request, $response) use ($libc, $leak, $server) {
    if ($request->server["request_uri"] === "/stats") {
        $response->end(json_encode($server->stats()));
        return;
    }
    if ($leak > 0) {
        $libc->malloc($leak);
    }
    $response->end("ok\\n");
});
$server->start();
"""


@pytest.mark.parametrize("coroutine,mode,tasks,roles,full", [
    # In base mode Swoole's parent process manages the workers, and calls itself the manager.
    ("1", "base", 0, {"manager", "worker"}, False),
    ("1", "process", 0, {"master", "manager", "worker"}, True),
    # Task workers are children of the manager like event workers: only the agent tells them apart.
    ("0", "process", 1, {"master", "manager", "worker", "task worker"}, True)])
def test_soak_finds_handler_leak_with_and_without_coroutines(swoole_recipe, docker_client, coroutine, mode, tasks,
                                                             roles, full):
    """With coroutines on (Swoole's default) LeakSanitizer misses a handler's C leak (measured here);
    the soak's live-heap growth finds it either way, with its rate and its allocation stack."""
    folder, env = swoole_recipe
    (folder / "soak").mkdir(exist_ok=True)
    (folder / "soak" / "server.php").write_text(SOAK_SERVER)
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "asanlab", "soak", "soak/server.php", "--recipe", "swoole.yml",
                           "-p", f"{port}:9501", "-e", "LEAK_BYTES=100", "-e", f"COROUTINE={coroutine}", "-e", f"MODE={mode}",
                           "-e", f"TASK_WORKERS={tasks}", "--stats-url", f"http://127.0.0.1:{port}/stats",
                           "--url", f"http://127.0.0.1:{port}/", "--checkpoints", "1000,5000,20000",
                           "--format", "json", "--grace", "30", *(["--full-stacks"] if full else [])],
                          cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 1, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    a = out["soak"]
    assert a["verdict"] == "LEAK" and a["bytes_per_request"] == pytest.approx(100, rel=0.10), a["series"]
    assert {s["role"] for s in a["series"]} == roles
    # Swoole's own request_count: asanlab's requests plus its reads of /stats, nothing lost on the way.
    last = a["checkpoints"][-1]
    assert last["requests"] <= last["server_requests"] <= last["requests"] + last["stats_reads"], last
    top = a["growing_sites"][0]
    assert top["bytes_per_request"] == pytest.approx(100, rel=0.10)
    if full:
        assert any("zif_ffi_trampoline" in f for f in top["frames"][:6]), top
        # With coroutines the handler's C stack starts at Swoole's coroutine entry; without, at its callback.
        where = "a coroutine" if coroutine == "1" else "the HTTP request handler"
        assert top["php"].startswith(f"an FFI call ($ffi->func()) in {where}") and "/app/server.php" in top["php"], top
    else:  # frame pointers only: the stack stops in libffi, at the allocator
        assert "malloc" in top["frames"][0], top
    lsan = sum(f["leaked_bytes"] for f in out["findings"] if f["category"] == "leak" and any(
        fr["function"] == "zif_ffi_trampoline" for fr in f["example"]["frames"]))
    print(f"coroutine={coroutine} mode={mode}: LeakSanitizer reported {lsan} of the 2000000+ bytes leaked")
    assert containers_of(docker_client, out["session"]) == []


def test_soak_worker_restarts_start_new_series(swoole_recipe, docker_client):
    """max_request restarts workers mid-soak: each new worker is a new series, and the report says so."""
    folder, env = swoole_recipe
    (folder / "soak").mkdir(exist_ok=True)
    (folder / "soak" / "server.php").write_text(SOAK_SERVER)
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "asanlab", "soak", "soak/server.php", "--recipe", "swoole.yml",
                           "-p", f"{port}:9501", "-e", "LEAK_BYTES=100", "-e", "COROUTINE=1", "-e", "MODE=process",
                           "-e", "MAX_REQUEST=2000", "--url", f"http://127.0.0.1:{port}/",
                           "--checkpoints", "1000,5000,20000", "--format", "json", "--grace", "30"],
                          cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    a = json.loads(proc.stdout)["soak"]
    workers = [s for s in a["series"] if s["role"] == "worker"]
    assert len(workers) > 2, a["series"]  # restarted workers are new series
    assert any("appeared" in e for e in a["events"]) and any("was gone" in e for e in a["events"])
    # Requests caught by a restart may time out (seen: 20 of 20,000 while exiting workers ran their
    # leak checks); they are counted, not lost.
    assert a["load"]["sent"] == 20000 and a["load"]["ok"] + a["load"]["failed"] == 20000


PHP_LEAKS = """<?php
// PHP-level leaks as the guides list them, one kind per run (LEAK_KIND), in Swoole's defaults:
// process mode (MODE=base for base), coroutines on (COROUTINE=0 turns them off), two workers, and
// a task worker (LEAK_KIND=task: the leak is in the task handler).
class Registry
{
    public static array $seen = [];
}
function remember_order(string $uri): void
{
    $GLOBALS['orders'][] = $uri . str_repeat("o", 100); // grows: global
}
function remember_seen(string $uri): void
{
    Registry::$seen[] = $uri . str_repeat("s", 100); // grows: static
}
function count_visit(string $uri): void
{
    static $visits = [];
    $visits[] = $uri . str_repeat("v", 100); // grows: function-static
}
function remember_task(string $uri): void
{
    $GLOBALS['tasks'][] = $uri . str_repeat("t", 100); // grows: task
}
class Events
{
    public array $listeners = [];
    public function on(string $event, callable $listener): void
    {
        $this->listeners[$event][] = $listener;
    }
}
class RequestContext
{
    public static array $byCoroutine = [];
}
$events = new Events();
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, getenv("MODE") === "base" ? SWOOLE_BASE : SWOOLE_PROCESS);
$withTasks = getenv("LEAK_KIND") === "task";
$server->set(["worker_num" => 2, "enable_coroutine" => getenv("COROUTINE") !== "0", "log_level" => SWOOLE_LOG_WARNING,
              "task_worker_num" => $withTasks ? 1 : 0]);
if ($withTasks) {
    $server->on("task", function ($server, $taskId, $workerId, $uri) { remember_task($uri); });
    $server->on("finish", function () {});
}
$server->on("request", function ($request, $response) use ($events, $server) {
    $uri = $request->server["request_uri"];
    switch (getenv("LEAK_KIND")) {
        case "global": remember_order($uri); break;
        case "static": remember_seen($uri); break;
        case "function-static": count_visit($uri); break;
        case "timer": Swoole\\Timer::tick(3600000, function () use ($uri) { return $uri; }); break; // grows: timer
        case "listener": $events->on("order", fn () => $uri . str_repeat("l", 100)); break; // grows: listener
        case "context": RequestContext::$byCoroutine[Swoole\\Coroutine::getCid()] = $uri . str_repeat("c", 100); break; // grows: context
        case "cycle": gc_disable(); $node = new stdClass(); $node->self = $node; $node->data = $uri . str_repeat("r", 100); break; // grows: cycle
        case "socket": $GLOBALS['sockets'][] = stream_socket_client("udp://127.0.0.1:9"); break; // grows: socket
        case "task": $server->task($uri); break; // kept by the task worker
    }
    $response->end("ok\\n");
});
$server->start();
"""


HOLDERS = {"global": "$orders", "static": "Registry::$seen", "function-static": "count_visit()::static $visits",
           "timer": "Swoole timers (Swoole\\Timer::stats())", "listener": "$events->listeners['order']",
           "context": "RequestContext::$byCoroutine", "socket": "$sockets", "task": "$tasks"}


@pytest.mark.parametrize("kind,coroutine,mode,php", [
    ("global", "1", "process", "8.2"), ("static", "1", "process", "8.2"), ("function-static", "1", "process", "8.2"),
    ("timer", "1", "process", "8.2"), ("global", "0", "process", "8.2"), ("global", "1", "base", "8.2"),
    ("listener", "1", "process", "8.2"), ("context", "1", "process", "8.2"), ("cycle", "1", "process", "8.2"),
    ("socket", "1", "process", "8.2"), ("task", "1", "process", "8.2"), ("global", "1", "process", "8.4"),
    ("static", "1", "process", "8.4")])
def test_soak_names_the_php_line_that_grows(php_line, docker_client, kind, coroutine, mode, php):
    """The growing live heap traced to the PHP line that allocated it (asanlab's agent samples
    allocations with the PHP stack), exactly, whatever Swoole's coroutine mode; on PHP 8.2 and 8.4."""
    folder, env, recipe_file = php_line(php)
    (folder / "phpleak").mkdir(exist_ok=True)
    (folder / "phpleak" / "server.php").write_text(PHP_LEAKS)
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "asanlab", "soak", "phpleak/server.php", "--recipe", recipe_file,
                           "-p", f"{port}:9501", "-e", f"LEAK_KIND={kind}", "-e", f"COROUTINE={coroutine}", "-e", f"MODE={mode}",
                           "--url", f"http://127.0.0.1:{port}/order", "--checkpoints", "1000,4000,8000",
                           "--format", "json", "--grace", "30"],
                          cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 1, proc.stderr[-3000:]
    a = json.loads(proc.stdout)["soak"]
    assert a["verdict"] == "LEAK", a["series"]
    top = a["growing_php_sites"][0]
    line = line_of(PHP_LEAKS, f"// grows: {kind}")
    assert (top["file"], top["line"]) == ("/app/server.php", line), a["growing_php_sites"][:3]
    holder = HOLDERS.get(kind)
    if holder:  # the variable that holds it, from the agent's census; one element per request
        first = a["growing_holders"][0]
        assert first["path"] == holder, a["growing_holders"][:3]
        assert first["elements_per_request"] == pytest.approx(1.0, rel=0.05), first
    if kind == "socket":  # the descriptors too, by the socket's peer
        assert a["descriptors"]["verdict"] == "LEAK", a["descriptors"]
        assert a["descriptors"]["growing"][0]["site"] == "udp to 127.0.0.1:9", a["descriptors"]["growing"]
    load = a.get("load") or {}
    print(f"{kind} coroutine={coroutine} {mode}: {top['bytes_per_request']:.1f} B/request at {top['path']}; "
          f"{load.get('sent', 0) / max(load.get('seconds', 0), 1e-9):.0f} req/s")
    assert containers_of(docker_client, json.loads(proc.stdout)["session"]) == []


def test_soak_of_a_clean_server_is_stable(swoole_recipe, docker_client):
    """Swoole's defaults (process mode, coroutines on, two workers), no leak: STABLE and exit 0,
    three soaks in a row (no false finding from start-up, however the stack was unwound)."""
    folder, env = swoole_recipe
    (folder / "soak").mkdir(exist_ok=True)
    (folder / "soak" / "server.php").write_text(SOAK_SERVER)
    for attempt in range(3):
        port = free_port()
        proc = subprocess.run([sys.executable, "-m", "asanlab", "soak", "soak/server.php", "--recipe", "swoole.yml",
                               "-p", f"{port}:9501", "-e", "LEAK_BYTES=0", "-e", "COROUTINE=1", "-e", "MODE=process",
                               "--url", f"http://127.0.0.1:{port}/", "--checkpoints", "1000,5000,10000",
                               "--format", "json", "--grace", "30"],
                              cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
        out = json.loads(proc.stdout)
        assert out["soak"]["verdict"] == "STABLE", out["soak"]["series"]
        assert all(s["verdict"] == "STABLE" for s in out["soak"]["series"] if s["role"] == "worker"), out["soak"]["series"]
        assert out["soak"]["descriptors"]["verdict"] == "STABLE" and out["soak"]["coroutines"]["verdict"] == "STABLE"
        failing = [f for f in out["findings"] if f["category"] != "startup-leak"]
        assert proc.returncode == 0 and failing == [], (attempt, failing)


@pytest.mark.parametrize("php", ["8.2", "8.4"])
def test_run_of_a_clean_server_exits_0(php_line, docker_client, php):
    """`asanlab run` of the same clean server, served and stopped with Ctrl-C: exit 0, the start-up
    leaks of every process folded, with `run`'s default unwinder (frame pointers: stacks cut short in
    system libraries are recognised as start-up by when the agent saw their objects allocated)."""
    folder, env, recipe_file = php_line(php)
    (folder / "soak").mkdir(exist_ok=True)
    (folder / "soak" / "server.php").write_text(SOAK_SERVER)
    port = free_port()
    with serving(folder, env, "soak/server.php", "--recipe", recipe_file, "-p", f"{port}:9501", "-e", "LEAK_BYTES=0",
                 "-e", "COROUTINE=1", "-e", "MODE=process", "--format", "json", "--grace", "30",
                 url=f"http://127.0.0.1:{port}/") as proc:
        for _ in range(50):
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        out, err = stop_run(proc, timeout=180)
    result = json.loads(out)
    failing = [f for f in result["findings"] if f["category"] != "startup-leak"]
    assert proc.returncode == 0 and failing == [], (err[-2000:], failing)
    assert any(f["category"] == "startup-leak" for f in result["findings"])
    assert result["session"]["stacks"] == "fast"
    assert "fast_unwind_on_malloc=1" in result["session"]["environment"]["ASAN_OPTIONS"]
    assert containers_of(docker_client, result["session"]["id"]) == []


FD_LEAK = """<?php
// Opens a file per request and keeps it (a descriptor leak); NOFILE lowers each worker's limit so
// that the workers run out of descriptors during the soak, and PHP warns of each failed fopen().
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, SWOOLE_PROCESS);
$server->set(["worker_num" => 2, "log_level" => SWOOLE_LOG_WARNING]);
$server->on("workerStart", function () {
    posix_setrlimit(POSIX_RLIMIT_NOFILE, (int) getenv("NOFILE"), (int) getenv("NOFILE"));
});
$server->on("request", function ($request, $response) {
    $f = fopen("/tmp/req-" . mt_rand() . ".log", "w");
    if ($f === false) { $response->status(500); $response->end("no descriptor\\n"); return; }
    $GLOBALS['open'][] = $f;
    $response->end("ok\\n");
});
$server->start();
"""


def test_soak_names_a_descriptor_leak_and_the_workers_still_answer(swoole_recipe, docker_client):
    """A file opened per request and kept, until the workers run out of descriptors (Swoole's
    defaults: process mode, coroutines on, two workers): open descriptors LEAK by the file's pattern
    and the headline names their rate; the workers, out of descriptors, are said alive once, with
    the PHP line that failed, and still answer (the agent keeps a descriptor in reserve): no process
    "gone", no unknown, zero or negative row, and memory.png has a panel for descriptors."""
    from asanlab.soak import plot

    folder, env = swoole_recipe
    (folder / "fdleak").mkdir(exist_ok=True)
    (folder / "fdleak" / "server.php").write_text(FD_LEAK)
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "asanlab", "soak", "fdleak/server.php", "--recipe", "swoole.yml",
                           "-p", f"{port}:9501", "-e", "NOFILE=3000", "--url", f"http://127.0.0.1:{port}/",
                           "--checkpoints", "1000,4000,8000", "--format", "json", "--grace", "30"],
                          cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 1, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    a = out["soak"]
    fds = a["descriptors"]
    assert a["verdict"] == "LEAK" and fds["verdict"] == "LEAK"
    workers = [s for s in fds["series"] if s["role"] == "worker"]
    assert len(workers) == 2 and all(s["verdict"] == "LEAK" for s in workers), workers
    assert all(s["fit"]["slope"] == pytest.approx(0.5, rel=0.05) for s in workers), workers
    assert fds["growing"][0]["site"] == "/tmp/req-*.log", fds["growing"]
    assert all(s["verdict"] == "STABLE" for s in fds["series"] if s["role"] in ("master", "manager"))
    assert a["growing_holders"][0]["path"] == "$open"
    [rate] = a["resource_rates"]
    assert rate["per_request"] == pytest.approx(1.0, rel=0.1) and rate["site"] == "/tmp/req-*.log", rate
    line = FD_LEAK.splitlines().index('    $f = fopen("/tmp/req-" . mt_rand() . ".log", "w");') + 1
    assert a["out_of_descriptors"]["where"] == f"fopen() at /app/server.php:{line}", a["out_of_descriptors"]
    # Alive, whatever else: the agent's reserve descriptor keeps them sampled, unless the app takes
    # it in the instant between the agent's close and open (then: "stopped answering", never gone).
    memory = {s["pid"]: s for s in a["series"]}
    assert all(memory[s["pid"]]["alive"] for s in workers), a["series"]
    assert any(not memory[s["pid"]]["stopped_answering"] for s in workers), a["series"]
    for row in a["checkpoints"]:  # never a zero or a negative: unknown (None) at most
        assert row["total"] is None or row["total"] > 0, row
        assert all(v is None or v > 0 for v in row["by_role"].values()), row
        assert row["bytes_per_request"] is None or row["bytes_per_request"] > 0, row
    assert a["failed_requests"], a["load"]

    sid = out["session"]
    text = subprocess.run([sys.executable, "-m", "asanlab", "replay", sid], cwd=folder, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300).stdout
    assert re.match(r"soak: LEAK, \d\.\d\d open file descriptors/request \(/tmp/req-\*\.log\), memory ", text), text[:300]
    assert text.count("alive, out of descriptors (EMFILE from fopen() at /app/server.php:") == 1, text
    assert "gone" not in text, text
    soak = folder / ".asanlab" / "sessions" / sid / "soak"
    samples = [json.loads(line) for line in (soak / "samples.jsonl").read_text().splitlines()]
    fig = plot.figure(samples, json.loads((soak / "analysis.json").read_text()))
    assert [ax.get_ylabel() for ax in fig.axes] == ["MiB (allocated)", "open file descriptors"]
    assert max(max(line.get_ydata()) for line in fig.axes[1].get_lines()) >= 2900
    assert containers_of(docker_client, sid) == []

ARMED = """<?php
// A double free that needs two requests on one connection: /arm keeps a block, /fire frees it
// twice. Swoole 6's defaults: base mode (no mode given), coroutines on, two workers (a connection
// stays on one). The other apps here name process mode.
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");
$server = new Swoole\\Http\\Server("0.0.0.0", 9501);
$server->set(["worker_num" => 2, "log_level" => SWOOLE_LOG_WARNING]);
$armed = [];
$server->on("request", function ($request, $response) use ($libc, &$armed) {
    $uri = $request->server["request_uri"];
    $fd = $request->fd;
    if ($uri === "/arm") {
        $armed[$fd] = $libc->malloc(16);
    } elseif ($uri === "/fire" && isset($armed[$fd])) {
        $libc->free($armed[$fd]);
        $libc->free($armed[$fd]);
    }
    $response->end("ok\\n");
});
$server->start();
"""


def test_run_records_the_traffic_and_reproduce_brings_the_crash_back(swoole_recipe, docker_client):
    """`run --record` keeps what the clients sent; `reproduce` sends it again to fresh containers
    and says how often each finding came back; the request the worker died on has no answer."""
    folder, env = swoole_recipe
    (folder / "armed").mkdir(exist_ok=True)
    (folder / "armed" / "server.php").write_text(ARMED)
    port = free_port()
    with serving(folder, env, "armed/server.php", "--recipe", "swoole.yml", "-p", f"{port}:9501", "--record",
                 "--format", "json", "--grace", "30", url=f"http://127.0.0.1:{port}/") as proc:
        with requests.Session() as s:  # one keep-alive connection: one worker
            for _ in range(3):
                assert s.get(f"http://127.0.0.1:{port}/hello", timeout=10).text == "ok\n"
            assert s.get(f"http://127.0.0.1:{port}/arm", timeout=10).text == "ok\n"
            with pytest.raises(requests.RequestException):
                s.get(f"http://127.0.0.1:{port}/fire", timeout=10)  # the worker dies on it
        time.sleep(2)
        assert requests.get(f"http://127.0.0.1:{port}/after", timeout=10).text == "ok\n"
        out, err = stop_run(proc, timeout=180)
    assert proc.returncode == 1, err[-3000:]
    recorded = json.loads(out)
    [double_free] = [f for f in recorded["findings"] if f["kind"] == "double-free"]
    sid = recorded["session"]["id"]
    from asanlab.run import traffic

    conns = traffic.read(folder / ".asanlab" / "sessions" / sid / "traffic" / traffic.FILE)
    lines = [(r.line, r.status) for r in traffic.all_requests(conns)]
    assert ("GET /arm", 200) in lines and ("GET /fire", None) in lines and ("GET /after", 200) in lines, lines
    stored = read_json(folder / ".asanlab" / "sessions" / sid / "session.json")["traffic"]
    assert stored["requests"] == len(lines) and [u.split(" (")[0] for u in stored["unanswered"]] == ["GET /fire"], stored
    assert "never answered: GET /fire" in err

    again = subprocess.run([sys.executable, "-m", "asanlab", "reproduce", sid, "--runs", "2", "--format", "json",
                            "--grace", "30"], cwd=folder, env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 1, again.stderr[-3000:]
    result = json.loads(again.stdout)
    came = {f["signature"]: f["came_back"] for f in result["findings"]}
    assert came.get(double_free["signature"]) == 2, (result, again.stderr[-2000:])
    assert all(r["requests"] == len(lines) for r in result["replayed"]), result["replayed"]
    # The request a worker died on is named in every run.
    assert all(any(u.startswith("GET /fire") for u in r["unanswered"]) for r in result["replayed"]), result
    for s in result["sessions"]:
        assert containers_of(docker_client, s) == []

    # Shrunk by delta debugging to the two requests that make it, on their one connection.
    shrunk = subprocess.run([sys.executable, "-m", "asanlab", "reproduce", sid, "--minimize", double_free["id"],
                             "--format", "json", "--grace", "30"], cwd=folder, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=1800)
    assert shrunk.returncode == 1, shrunk.stderr[-3000:]
    kept = json.loads(shrunk.stdout)
    assert [r["request"] for r in kept["requests"]] == ["GET /arm", "GET /fire"], (kept, shrunk.stderr[-2000:])
    assert len({r["connection"] for r in kept["requests"]}) == 1
    print(kept["replays"], "replays to shrink", len(lines), "requests")
    # The reproducer bundle runs on its own: its copy of the app, its recording, the recorded image.
    bundle = Path(kept["bundle"])
    assert bundle == folder / ".asanlab" / "sessions" / sid / "reproducer"
    assert (bundle / "app" / "server.php").read_text() == ARMED
    assert [json.loads(x)["url"] for x in (bundle / "requests.jsonl").read_text().splitlines()] == ["/arm", "/fire"]
    again = subprocess.run([sys.executable, "-m", "asanlab", "reproduce", str(bundle), "--runs", "1",
                            "--format", "json", "--grace", "30"], cwd=folder, env={**os.environ, **env},
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 1, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert {f["signature"]: f["came_back"] for f in result["findings"]}.get(double_free["signature"]) == 1, result
    assert result["replayed"][0]["requests"] == 2
    # And it travels in the session's bug-report bundle.
    archive = folder / "report.tar.gz"
    done = subprocess.run([sys.executable, "-m", "asanlab", "replay", sid, "--bundle", str(archive)], cwd=folder,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert f"asanlab-{sid}/reproducer/bundle.json" in names and f"asanlab-{sid}/reproducer/app/server.php" in names


RACE = """<?php
// A double free that needs two requests in flight at once on one worker: /hold keeps a block until a
// /drop has come (3 s at most, so a loaded machine's late /drop still overlaps), /drop frees whatever
// is held, then /hold frees it again. Sent one after the other, /drop finds nothing held. Swoole's
// defaults: process mode, coroutines on, two workers.
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, SWOOLE_PROCESS);
$server->set(["worker_num" => 2, "log_level" => SWOOLE_LOG_WARNING]);
$held = null;
$dropped = false;
$server->on("request", function ($request, $response) use ($libc, &$held, &$dropped) {
    $uri = $request->server["request_uri"];
    if ($uri === "/hold") {
        $held = $libc->malloc(16);
        for ($waited = 0; !$dropped && $waited < 300; $waited++) {
            Swoole\\Coroutine::sleep(0.01);
        }
        $libc->free($held);
        $held = null;
        $dropped = false;
    } elseif ($uri === "/drop" && $held !== null) {
        $libc->free($held);
        $dropped = true;
    }
    $response->end("ok\\n");
});
$server->start();
"""


def test_reproduce_concurrent_brings_back_a_crash_that_needs_overlapping_requests(swoole_recipe, docker_client):
    """Eight connections in flight together: four /hold, then four /drop (a connection stays on one
    worker, chosen by its descriptor's number, so each worker gets some of both whatever numbers
    the connections get). Replayed one connection after another the crash is gone, and reproduce
    says why; `--concurrent` opens them at their recorded times and brings it back."""
    folder, env = swoole_recipe
    (folder / "race").mkdir(exist_ok=True)
    (folder / "race" / "server.php").write_text(RACE)
    port = free_port()

    def get(path: str, delay: float, answers: dict) -> None:
        time.sleep(delay)
        try:
            answers[path + str(delay)] = requests.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code
        except requests.RequestException:
            answers[path + str(delay)] = None  # the /hold whose worker died on the double free

    with serving(folder, env, "race/server.php", "--recipe", "swoole.yml", "-p", f"{port}:9501", "--record",
                 "--format", "json", "--grace", "30", url=f"http://127.0.0.1:{port}/") as proc:
        answers: dict = {}
        clients = [threading.Thread(target=get, args=(path, delay, answers))
                   for path, delay in [("/hold", n * 0.02) for n in range(4)] + [("/drop", 0.2 + n * 0.02) for n in range(4)]]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        out, err = stop_run(proc, timeout=180)
    assert proc.returncode == 1, err[-3000:]
    recorded = json.loads(out)
    [signature] = {f["signature"] for f in recorded["findings"] if f["kind"] == "double-free"}
    sid = recorded["session"]["id"]
    assert any(v is None for k, v in answers.items() if k.startswith("/hold")), answers  # a worker died

    one_by_one = asanlab("reproduce", sid, "--runs", "1", "--grace", "30", cwd=folder, env=env, timeout=900)
    assert one_by_one.returncode == 0, one_by_one.stdout + one_by_one.stderr[-3000:]
    assert f"gone in 1 of 1  {signature}" in one_by_one.stdout, one_by_one.stdout
    assert "connections open at once and they were replayed one after another: --concurrent" in one_by_one.stdout

    together = asanlab("reproduce", sid, "--runs", "2", "--concurrent", "--format", "json", "--grace", "30",
                       cwd=folder, env=env, timeout=900)
    assert together.returncode == 1, together.stderr[-3000:]
    result = json.loads(together.stdout)
    assert {f["signature"]: f["came_back"] for f in result["findings"]}.get(signature) == 2, \
        (result, together.stderr[-2000:])
    assert result["connections_at_once"] >= 3 and all(r["concurrent"] for r in result["replayed"]), result
    for s in result["sessions"]:
        assert containers_of(docker_client, s) == []


WEBSOCKET = """<?php
// A WebSocket server in Swoole's defaults as users run them (process mode, coroutines on, two
// workers) with a double free in its message handler that needs two messages on one connection:
// "arm" keeps a block, "fire" frees it twice; any other message is echoed. Swoole unmasks every
// client frame with misaligned loads, which asanlab's UBSan images report and go on from, and
// asanlab's shipped UBSan suppression silences.
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");
$server = new Swoole\\WebSocket\\Server("0.0.0.0", 9501, SWOOLE_PROCESS);
$server->set(["worker_num" => 2, "log_level" => SWOOLE_LOG_WARNING]);
$armed = [];
$server->on("message", function ($server, $frame) use ($libc, &$armed) {
    if ($frame->data === "arm") {
        $armed[$frame->fd] = $libc->malloc(16);
        $server->push($frame->fd, "armed");
    } elseif ($frame->data === "fire" && isset($armed[$frame->fd])) {
        $libc->free($armed[$frame->fd]);
        $libc->free($armed[$frame->fd]);
        $server->push($frame->fd, "fired");
    } else {
        $server->push($frame->fd, "ok " . $frame->data);
    }
});
$server->on("request", function ($request, $response) {
    $response->end("ok\\n");
});
$server->start();
"""


def test_a_websocket_handlers_crash_is_named_recorded_replayed_and_shrunk_to_its_messages(swoole_recipe,
                                                                                          docker_client):
    """A WebSocket server runs in the ASan+UBSan image (Swoole's misaligned unmasking is no
    finding); the double free in its message handler is named with its PHP line and the message it
    served; `run --record` keeps the upgrade (answered: 101) and the messages, `reproduce` brings the
    crash back, `--minimize` keeps the two messages that make it, and the bundle brings it back."""
    import asyncio

    import aiohttp

    folder, env = swoole_recipe
    (folder / "ws").mkdir(exist_ok=True)
    (folder / "ws" / "server.php").write_text(WEBSOCKET)
    port = free_port()

    async def talk() -> list:
        got = []
        async with aiohttp.ClientSession() as session:
            # No compression offered (reading compressed messages is unit-tested in test_replay.py).
            async with session.ws_connect(f"http://127.0.0.1:{port}/chat", compress=0) as ws:
                for text in ("hello", "arm", "hello again", "fire"):
                    await ws.send_str(text)
                    try:
                        msg = await ws.receive(timeout=5)
                        got.append(msg.data if msg.type == aiohttp.WSMsgType.TEXT else msg.type.name)
                    except asyncio.TimeoutError:  # a dead worker's connection stays open, silent
                        got.append("no answer")
        return got

    with serving(folder, env, "ws/server.php", "--recipe", "swoole.yml", "-p", f"{port}:9501", "--record",
                 "--format", "json", "--grace", "30", url=f"http://127.0.0.1:{port}/") as proc:
        got = asyncio.run(talk())
        out, err = stop_run(proc, timeout=180)
    assert proc.returncode == 1, err[-3000:]
    assert got == ["ok hello", "armed", "ok hello again", "no answer"], got
    recorded = json.loads(out)
    assert not [f for f in recorded["findings"] if "websocket::mask" in f["signature"]], recorded["findings"]
    [finding] = [f for f in recorded["findings"] if f["category"] == "error"]
    assert finding["kind"] == "double-free", finding
    php = finding["example"]["php"]
    print("PHP side:", php)
    freed = line_of(WEBSOCKET, "$libc->free($armed[$frame->fd]);", 2)
    assert any(is_handler_frame(fr, WEBSOCKET, freed, "message") for fr in php["frames"]), php
    assert php["request"].startswith("WebSocket message on connection ") and php["request"].endswith(
        ', 4 byte(s): "fire"'), php
    sid = recorded["session"]["id"]
    stored = read_json(folder / ".asanlab" / "sessions" / sid / "session.json")["traffic"]
    # The four messages and the client's close; the upgrade was answered (101).
    assert stored["websocket_messages"] == 5 and stored["unanswered"] == [], stored
    assert "WebSocket message(s)" in err

    again = asanlab("reproduce", sid, "--runs", "1", "--format", "json", "--grace", "30", cwd=folder, env=env,
                    timeout=900)
    assert again.returncode == 1, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert {f["signature"]: f["came_back"] for f in result["findings"]}.get(finding["signature"]) == 1, \
        (result, again.stderr[-2000:])
    assert result["replayed"][0]["websocket_connections"] == 1, result["replayed"]

    # Shrunk to the two messages (their upgrade goes with them); the bundle, whose recording holds
    # them as frames of their own, brings the finding back.
    # No finding named: the session's one error finding is kept, and that is said.
    shrunk = asanlab("reproduce", sid, "--minimize", "--format", "json", "--grace", "30",
                     cwd=folder, env=env, timeout=1800)
    assert shrunk.returncode == 1, shrunk.stderr[-3000:]
    assert f"one error finding, {finding['id']}" in shrunk.stderr
    kept = json.loads(shrunk.stdout)
    assert [r["request"] for r in kept["requests"]] == ["WebSocket text 3 B 'arm'", "WebSocket text 4 B 'fire'"], kept
    bundle = asanlab("reproduce", kept["bundle"], "--runs", "1", "--format", "json", "--grace", "30", cwd=folder,
                     env=env, timeout=900)
    assert bundle.returncode == 1, bundle.stderr[-3000:]
    again = json.loads(bundle.stdout)
    assert {f["signature"]: f["came_back"] for f in again["findings"]}.get(finding["signature"]) == 1, again
    # One HTTP request (the upgrade), then the two messages on it.
    assert again["replayed"][0]["requests"] == 1 and again["replayed"][0]["websocket_connections"] == 1
    for s in result["sessions"] + again["sessions"]:
        assert containers_of(docker_client, s) == []


def test_init_from_an_asanlab_image_rebuilds_it(swoole_recipe, docker_client, tmp_path):
    """`asanlab init --from-image` on an image asanlab built: the recipe it writes rebuilds the same
    PHP modules and Swoole features, from the same cached stages (PHP from the same Debian source
    package, its label says which): the same filesystem layers."""
    folder, env = swoole_recipe
    [image] = docker_client.images.list(filters={"label": "org.asanlab.recipe=e2e-swoole"})
    source = next(t for t in image.tags if ":sha-" in t)
    init = asanlab("init", "--from-image", source, "--name", "e2e-swoole-init", cwd=tmp_path, env=env, check=0)
    assert f"PHP 8.2 (Debian's php8.2), Swoole {SWOOLE_MAIN}" in init.stderr, init.stderr
    build = asanlab("build", cwd=tmp_path, env=env, timeout=3600, check=0)
    rebuilt = build.stdout.splitlines()[0]
    assert php_modules(docker_client, rebuilt) == php_modules(docker_client, source)
    assert swoole_features(docker_client, rebuilt) == swoole_features(docker_client, source)
    assert "source:\n    debian: php8.2" in (tmp_path / "asanlab.yml").read_text()
    layers = [docker_client.images.get(ref).attrs["RootFS"]["Layers"] for ref in (rebuilt, source)]
    assert layers[0] == layers[1]


DYING_SERVER = """<?php
// Serves until request SHUTDOWN_AT, then the whole server shuts down (as a server whose master
// dies would): the soak must say that it exited, with its status and last lines, not a sampler fault.
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, SWOOLE_PROCESS);
$server->set(['worker_num' => 2, 'log_level' => SWOOLE_LOG_WARNING]);
$server->on('request', function ($request, $response) use ($server) {
    $count = $server->stats()['request_count'];
    $response->end("ok\\n");
    // >=: two workers read the shared count concurrently, and either may skip 1200 itself.
    if ($count >= 1200) {
        echo "shutting down at request 1200\\n";
        $server->shutdown();
    }
});
$server->start();
"""


def soak_of(folder: Path, env: dict, name: str, source: str, checkpoints: str, *more: str):
    """`asanlab soak` of `source` as name/server.php on the suite's Swoole recipe, to the checkpoints."""
    (folder / name).mkdir(exist_ok=True)
    (folder / name / "server.php").write_text(source)
    port = free_port()
    return asanlab("soak", f"{name}/server.php", "--recipe", "swoole.yml", "-p", f"{port}:9501",
                   "--url", f"http://127.0.0.1:{port}/", "--checkpoints", checkpoints, "--grace", "30", *more,
                   cwd=folder, env=env, timeout=1800)


def test_soak_of_a_server_that_exits_mid_way_says_so(swoole_recipe, docker_client):
    """Bad input for the soak: the server really ends mid-way. Said as that, with its exit status and
    its last lines; its processes are gone (the sampler is not blamed)."""
    folder, env = swoole_recipe
    proc = soak_of(folder, env, "dying", DYING_SERVER, "500,1500,4000")
    said = proc.stdout + proc.stderr
    exited = re.search(r"the app exited after (\d+) requests: exit status (\d+); its last lines:", said)
    assert exited and 1200 <= int(exited.group(1)) <= 4000, said[-4000:]
    assert "shutting down at request 1200" in said
    assert "sampler failed" not in said and "was gone after" in said
    sid = re.search(r"^session (\S+):", proc.stdout, re.M).group(1)
    assert containers_of(docker_client, sid) == []


WORKER_EXIT = """<?php
// Each worker calls exit() at its 400th request (coroutines on: PHP's exit in a coroutine); Swoole's
// manager starts another worker, and the server goes on serving.
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, SWOOLE_PROCESS);
$server->set(['worker_num' => 2, 'log_level' => SWOOLE_LOG_WARNING]);
$served = 0;
$server->on('request', function ($request, $response) use (&$served) {
    $response->end("ok\\n");
    if (++$served == 400) {
        echo "worker " . getmypid() . " exits at its request $served\\n";
        exit(3);
    }
});
$server->start();
"""


def test_soak_of_workers_that_exit_every_n_requests_says_so(swoole_recipe, docker_client):
    """Bad input for the soak: workers that die every 400 requests while the server goes on. Each dead
    worker is said gone, each new one a new series; the server is not said to have exited, the sampler
    is not blamed, and the session records the workers' exits."""
    folder, env = swoole_recipe
    proc = soak_of(folder, env, "exiting", WORKER_EXIT, "500,1500,3000", "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    a = out["soak"]
    said = proc.stderr + "\n".join(a["events"])
    assert "the app exited after" not in said and "sampler failed" not in said, said[-3000:]
    workers = [s for s in a["series"] if s["role"] == "worker"]
    assert len(workers) >= 4 and sum(s["alive"] for s in workers) == 2, workers
    assert sum("appeared by" in e for e in a["events"]) >= 2 and any("was gone after" in e for e in a["events"])
    assert "exits at its request 400" in (folder / ".asanlab" / "sessions" / out["session"] / "raw" /
                                         "output.log").read_text(errors="replace")
    assert a["load"]["sent"] == 3000 and a["load"]["ok"] + a["load"]["failed"] == 3000, a["load"]
    stored = read_json(folder / ".asanlab" / "sessions" / out["session"] / "session.json")
    assert len(stored["abnormal_exits"]) >= 2, stored["abnormal_exits"]
    assert containers_of(docker_client, out["session"]) == []


def test_report_symbolizes_a_swoole_servers_unsymbolized_logs_in_their_image(swoole_recipe, docker_client):
    """Logs of a Swoole server's processes written without symbolization (as from a production debug
    run whose image had no llvm-symbolizer), handed over without their session: `report` says once that
    they are unsymbolized; `report --image` finds what the session's own symbolized replay finds (the
    handler's leak, every process's start-up folded), not one false finding per start-up leak."""
    import shutil

    folder, env = swoole_recipe
    (folder / "nosym").mkdir(exist_ok=True)
    (folder / "nosym" / "server.php").write_text(SERVER)
    port = free_port()
    with serving(folder, env, "nosym/server.php", "--recipe", "swoole.yml", "-p", f"{port}:9501", "-e", "COROUTINE=0",
                 "-e", "ASAN_OPTIONS=symbolize=0", "--full-stacks", "--format", "json", "--grace", "30",
                 url=f"http://127.0.0.1:{port}/") as proc:
        for _ in range(20):
            assert requests.get(f"http://127.0.0.1:{port}/leak", timeout=10).text == "ok\n"
        out, err = stop_run(proc, timeout=180)
    sid = json.loads(out)["session"]["id"]
    replay = asanlab("replay", sid, "--symbolize", "--format", "json", cwd=folder, env=env, check=1)
    expected = sorted(f["signature"] for f in json.loads(replay.stdout)["findings"])
    leaks = [f for f in json.loads(replay.stdout)["findings"] if f["category"] == "leak"
             and any(fr["function"] == "zif_ffi_trampoline" for fr in f["example"]["frames"])]
    assert sum(f["leaked_bytes"] for f in leaks) == 2000, leaks  # the handler's 20 x 100 bytes
    logs = folder / f"nosym-logs-{sid}"  # the project folder is shared by other tests' copies
    shutil.copytree(folder / ".asanlab" / "sessions" / sid / "raw" / "sanitizer", logs)
    assert len(list(logs.iterdir())) >= 3  # the master, the manager, a worker
    plain = asanlab("report", logs, "--format", "json", cwd=folder, env=env)
    assert plain.stderr.count("not symbolized (module+offset)") == 1 and "--image IMAGE" in plain.stderr
    [image] = docker_client.images.list(filters={"label": "org.asanlab.recipe=e2e-swoole"})
    symbolized = asanlab("report", logs, "--image", image.id, "--format", "json", cwd=folder, env=env, check=1)
    assert "not symbolized" not in symbolized.stderr
    found = json.loads(symbolized.stdout)["findings"]
    assert sorted(f["signature"] for f in found) == expected
    # One finding that is not start-up: the handler's 20 x 100 bytes, in the workers.
    assert [f["leaked_bytes"] for f in found if f["category"] != "startup-leak"] == [2000], found
    assert containers_of(docker_client, sid) == []
