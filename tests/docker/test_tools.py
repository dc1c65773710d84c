"""The field's other tools: a debug image (`tools: [valgrind, gdb]`: PHP and Swoole with -g, no
ASan, Swoole built against Valgrind's headers so that it registers its coroutine stacks) built and
checked for real, and `asanlab run --valgrind` of a Swoole server as users run it (process mode,
coroutines on, two workers): a handler's leak and a handler's invalid write are reported with their
stacks through the same findings as the sanitizers', and the start-up noise is folded. Without
--valgrind, a worker that dies by SIGSEGV in that image leaves its crash in the session: gdb's C
frames, the PHP line and the request."""

import hashlib
import json
import re
import shutil

import pytest
import requests

from .conftest import (DOWNLOADED_PHP_RECIPE, SWOOLE_MAIN, asanlab, containers_of, free_port, read_json,
                       remove_images, serving, stop_run, wait_http, without_agent)

pytestmark = [pytest.mark.docker, pytest.mark.swoole]

SERVER = """<?php
$libc = FFI::cdef("void *malloc(size_t); void free(void *); void *memset(void *, int, size_t);");
$server = new Swoole\\Http\\Server("0.0.0.0", 9501, SWOOLE_PROCESS);
$server->set(["worker_num" => 2, "log_level" => SWOOLE_LOG_WARNING]);
$server->on("request", function ($request, $response) use ($libc) {
    if ($request->server["request_uri"] === "/leak") {
        $libc->malloc(100);
    } elseif ($request->server["request_uri"] === "/write") {
        $p = $libc->malloc(8);
        $libc->memset($p, 0, 24);
        $libc->free($p);
    } elseif ($request->server["request_uri"] === "/crash") {
        crash();
    }
    $response->end("ok\\n");
});
$server->start();

function crash() {
    $address = FFI::new("intptr_t");
    $address->cdata = 8;
    $p = FFI::cast("int *", $address);
    $p[0] = 1;  // SIGSEGV: a write to address 8
}
"""


@pytest.fixture(scope="module")
def debug_recipe(work, mirror, base_image, swoole_source, docker_client):
    """PHP's release tarball, downloaded over HTTP and checked against php.net's sha256, built with
    -g and no sanitizers (a Valgrind recipe has none: asked for, they are refused), Swoole on top."""
    folder, env = work
    version, _, served = mirror
    source = swoole_source(SWOOLE_MAIN)
    env = {**env, **source.env()}
    php_recipe = DOWNLOADED_PHP_RECIPE.format(name="e2e-debug", base_image=base_image, version=version)
    (folder / "debug.yml").write_text(php_recipe + source.recipe_lines(folder, ["--enable-sockets"])
                                      + "tools: [valgrind, gdb]\n")
    remove_images(docker_client, "e2e-debug")  # an image kept from an earlier run: build (and check) for real
    build = asanlab("build", "debug.yml", cwd=folder, env=env, timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "instrumentation check passed" in build.stderr and "valgrind: installed" in build.stderr, \
        build.stderr[-3000:]
    tarball = served / f"php-{version}.tar.xz"
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert (folder / "cache" / "sources" / digest / tarball.name).is_file()
    # Downloaded and checked here, or by an earlier test of the run into the same cache.
    assert (f"sha256 {digest[:12]} (php.net)" in build.stderr
            or f"(cached, sha256 {digest[:12]})" in build.stderr), build.stderr[-3000:]
    [image] = docker_client.images.list(filters={"label": "org.asanlab.recipe=e2e-debug"})
    assert image.labels["org.asanlab.tools"] == "gdb,valgrind" and image.labels["org.asanlab.sanitizers"] == ""
    return folder, env


def test_run_under_valgrind_reports_a_handlers_leak_and_invalid_write(debug_recipe, docker_client):
    folder, env = debug_recipe
    (folder / "vg").mkdir(exist_ok=True)
    (folder / "vg" / "server.php").write_text(SERVER)
    port = free_port()
    with serving(folder, env, "vg/server.php", "--recipe", "debug.yml", "--valgrind", "--record", "-p", f"{port}:9501",
                 "--format", "json", "--grace", "120", url=f"http://127.0.0.1:{port}/", ready_within=300) as proc:
        with requests.Session() as s:
            for _ in range(5):
                assert s.get(f"http://127.0.0.1:{port}/leak", timeout=60).text == "ok\n"
            assert s.get(f"http://127.0.0.1:{port}/write", timeout=60).text == "ok\n"
            with pytest.raises(requests.RequestException):  # the worker dies: a write to address 8
                s.get(f"http://127.0.0.1:{port}/crash", timeout=60).raise_for_status()
        wait_http(f"http://127.0.0.1:{port}/", 300)  # the manager started a new worker, under memcheck too
        out, err = stop_run(proc, timeout=600)
    assert proc.returncode == 1, err[-3000:]
    result = json.loads(out)
    sid = result["session"]["id"]
    raw = folder / ".asanlab" / "sessions" / sid / "raw" / "sanitizer"
    xml = sorted(p.name for p in raw.iterdir() if p.name.startswith("valgrind."))
    assert len(xml) >= 4, xml  # master, manager, two workers: one file each
    failing = [f for f in result["findings"] if f["category"] != "startup-leak"]
    print(json.dumps([(f["category"], f["kind"], f["signature"], f["leaked_bytes"]) for f in failing], indent=1))
    writes = [f for f in failing if f["kind"] == "invalid-write"]
    assert all(w["tool"] == "Valgrind" for w in writes) and len(writes) == 2, writes
    [write] = [w for w in writes if any("memset" in (fr.get("function") or "") for fr in w["example"]["frames"])]
    # The worker's write to address 8: memcheck names it with the FFI frames that wrote, and the
    # process's death adds no finding of its own (its report is this one).
    [crash] = [w for w in writes if w is not write]
    assert any("zend_ffi" in (fr.get("function") or "") for fr in crash["example"]["frames"][:3]), crash
    assert "Address 0x8 " in crash["example"]["text"], crash["example"]["text"][-2000:]
    [leak] = [f for f in failing if f["category"] == "leak"]
    assert leak["leaked_bytes"] == 500 and leak["tool"] == "Valgrind", leak
    assert any("ffi" in (fr.get("function") or "") + (fr.get("module") or "") for fr in leak["example"]["frames"])
    assert len(failing) == 3, failing  # nothing else: the start-up leaks of every process are folded
    assert any(f["category"] == "startup-leak" for f in result["findings"])
    assert containers_of(docker_client, sid) == []

    # Replayed from its recording under memcheck again (the session keeps `valgrind`): the worker's
    # invalid write and the handler's leak come back.
    again = asanlab("reproduce", sid, "--runs", "1", "--format", "json", "--grace", "120", cwd=folder, env=env,
                    timeout=1200)
    assert again.returncode == 1, again.stderr[-3000:]
    replayed = json.loads(again.stdout)
    came = {f["signature"]: f["came_back"] for f in replayed["findings"]}
    assert came.get(crash["signature"]) == 1 and came.get(leak["signature"]) == 1, (came, again.stderr[-2000:])
    [rsid] = replayed["sessions"]
    assert read_json(folder / ".asanlab" / "sessions" / rsid / "session.json")["valgrind"] is True
    assert containers_of(docker_client, rsid) == []


def test_valgrind_needs_an_image_that_has_it(work, debug_recipe):
    """An ASan image has no Valgrind (and could not run under it): one sentence, exit 2, nothing started."""
    folder, env = work
    (folder / "vg2").mkdir(exist_ok=True)
    (folder / "vg2" / "app.php").write_text("<?php echo 'hi';\n")
    before = sorted((folder / ".asanlab" / "sessions").iterdir())
    proc = asanlab("run", "vg2/app.php", "--recipe", "php.yml", "--valgrind", cwd=folder, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "has no Valgrind" in proc.stderr and "tools: [valgrind]" in proc.stderr
    assert sorted((folder / ".asanlab" / "sessions").iterdir()) == before


def test_a_worker_that_dies_by_sigsegv_leaves_its_crash_in_the_session(debug_recipe, docker_client):
    """No ASan in this image: the agent's handler catches the signal, gdb (in the image) attaches to
    the dying worker; the finding has gdb's C frames, the PHP line that wrote and the request."""
    folder, env = debug_recipe
    (folder / "crash").mkdir(exist_ok=True)
    (folder / "crash" / "server.php").write_text(SERVER)
    port = free_port()
    with serving(folder, env, "crash/server.php", "--recipe", "debug.yml", "-p", f"{port}:9501", "--format", "json",
                 url=f"http://127.0.0.1:{port}/", ready_within=300) as proc:
        with requests.Session() as s:
            assert s.get(f"http://127.0.0.1:{port}/", timeout=60).text == "ok\n"
            with pytest.raises(requests.RequestException):
                got = s.get(f"http://127.0.0.1:{port}/crash", timeout=20)
                got.raise_for_status()  # no answer from a worker that died: a 5xx, a reset or the timeout
        wait_http(f"http://127.0.0.1:{port}/", 120)  # the manager started a new worker
        out, err = stop_run(proc, timeout=300)
    assert proc.returncode == 1, err[-3000:]
    result = json.loads(out)
    sid = result["session"]["id"]
    [crash] = [f for f in result["findings"] if f["tool"] == "Crash"]
    example = crash["example"]
    print(json.dumps(example, indent=1)[:6000])
    assert crash["category"] == "error" and crash["kind"] == "SEGV" and example["address"] == "0x8", crash
    functions = [fr.get("function") or "" for fr in example["frames"]]
    assert any("ffi" in fn for fn in functions[:3]), functions  # gdb's frames, from where it faulted
    assert any(fr.get("file", "") and fr["file"].endswith(".c") and fr.get("line") for fr in example["frames"])
    php = example["php"]
    assert php["frames"][0]["function"] == "crash" and php["frames"][0]["file"] == "/app/server.php"
    assert php["frames"][0]["line"] == SERVER.splitlines().index("    $p[0] = 1;  // SIGSEGV: a write to address 8") + 1
    assert php["request"] == "GET /crash" and php["coroutine"] and php["coroutine"] > 0, php
    raw = (folder / ".asanlab" / "sessions" / sid / "raw" / "php")
    [crash_file] = list(raw.glob("crash.*"))
    text = crash_file.read_text()
    assert "asanlab-gdb registers" in text and "rip" in text, text[-3000:]
    assert "asanlab-gdb zbacktrace" in text and "asanlab-gdb co_bt" in text, text[-3000:]
    shown = asanlab("replay", sid, cwd=folder, env=env, timeout=120)
    assert "CRASH SEGV on address 0x8 (signal 11 SIGSEGV)" in shown.stdout, shown.stdout
    assert "crash() /app/server.php" in shown.stdout and "GET /crash" in shown.stdout, shown.stdout
    assert containers_of(docker_client, sid) == []


def test_a_worker_crash_in_an_image_without_the_agent_leaves_its_stack_through_asanlabs_crash_handler(
        debug_recipe, docker_client):
    """`--image` of an image asanlab's agent is not in (here the debug image, its label taken away):
    asanlab builds its crash handler (the agent's sources without PHP's headers) in a helper image
    from the Debian base, reads the image's glibc, mounts the handler and preloads it. The worker's
    crash then leaves its C stack (gdb's, since this image has gdb) and the PHP function and line
    that ran; so does a plain script's."""
    folder, env = debug_recipe
    # Built for real here, not found: an earlier test's run of an image without the agent (in this
    # suite's state folder) may have built and copied it already.
    for old in docker_client.images.list(name="asanlab/crash-handler"):
        docker_client.images.remove(old.id, force=True)
    shutil.rmtree(folder / ".asanlab" / "crash-handler", ignore_errors=True)
    with without_agent(docker_client, "e2e-debug", "asanlab-test/debug-no-agent:latest") as tag:
        (folder / "crash2").mkdir(exist_ok=True)
        (folder / "crash2" / "server.php").write_text(SERVER)
        port = free_port()
        with serving(folder, env, "crash2/server.php", "--image", tag, "-p", f"{port}:9501", "--format", "json",
                     url=f"http://127.0.0.1:{port}/", ready_within=600) as proc:
            with requests.Session() as s:
                with pytest.raises(requests.RequestException):
                    s.get(f"http://127.0.0.1:{port}/crash", timeout=20).raise_for_status()
            wait_http(f"http://127.0.0.1:{port}/", 120)  # the manager started a new worker
            out, err = stop_run(proc, timeout=300)
        assert proc.returncode == 1, err[-3000:]
        assert "building asanlab's crash handler" in err and "crash handler is preloaded" in err, err[-3000:]
        assert docker_client.images.list(name="asanlab/crash-handler"), "the helper image was not kept"
        result = json.loads(out)
        [crash] = [f for f in result["findings"] if f["tool"] == "Crash"]
        example = crash["example"]
        print(json.dumps(example, indent=1)[:4000])
        assert crash["kind"] == "SEGV" and crash["category"] == "error" and example["address"] == "0x8", crash
        functions = [fr.get("function") or "" for fr in example["frames"]]
        assert any("ffi" in fn for fn in functions[:3]), functions
        line = SERVER.splitlines().index("    $p[0] = 1;  // SIGSEGV: a write to address 8") + 1
        assert example["php"]["frames"][0] == {"function": "crash", "file": "/app/server.php", "line": line}, example
        sid = result["session"]["id"]
        shown = asanlab("replay", sid, cwd=folder, env=env, timeout=120)
        assert shown.returncode == 1 and f"crash() /app/server.php:{line}" in shown.stdout, shown.stdout
        assert containers_of(docker_client, sid) == []

        # A plain script that segfaults: the handler's report is its main process's (pid 1), and
        # Docker's exit code 139 adds no second finding. The handler is not built again.
        (folder / "crash2" / "script.php").write_text(
            "<?php\n$a = FFI::new('intptr_t');\n$a->cdata = 8;\nFFI::cast('int *', $a)[0] = 1;\n")
        proc = asanlab("run", "crash2/script.php", "--image", tag, "--format", "json", cwd=folder, env=env,
                       timeout=600)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "building asanlab's crash handler" not in proc.stderr
        result = json.loads(proc.stdout)
        assert result["session"]["exit_code"] == 139
        [crash] = [f for f in result["findings"] if f["tool"] == "Crash"]
        assert crash["example"]["address"] == "0x8", crash
        # PHP's get_active_function_name() calls a script's top level "main".
        assert crash["example"]["php"]["frames"] == [{"function": "main", "file": "/app/script.php", "line": 4}], \
            crash["example"]["php"]
