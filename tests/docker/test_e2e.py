"""The core pipeline for real: PHP's release tarball served on 127.0.0.1, `asanlab build` of a
PHP-only recipe, `asanlab run` of scripts with real C bugs, the stored session, `asanlab replay`."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, asanlab, containers_of, read_json, remove_images

pytestmark = pytest.mark.docker

DEMO = REPO / "asanlab" / "data" / "demo.php"

SIGTERM_APP = """<?php
// Leaks 200 bytes, then waits; on SIGTERM it exits normally so LeakSanitizer runs.
pcntl_async_signals(true);
pcntl_signal(SIGTERM, function () { echo "got SIGTERM\\n"; exit(0); });
$f = FFI::cdef("void *malloc(size_t);");
$f->malloc(200);
echo "ready\\n";
while (true) { sleep(1); }
"""


def write_app(folder: Path, name: str, source: str) -> str:
    """An app folder in the project (mounted read-only at /app); returns the path to pass to run."""
    (folder / name).mkdir()
    (folder / name / "app.php").write_text(source)
    return f"{name}/app.php"


def run_until_ready(folder: Path, env: dict, app: str, image: str) -> tuple[subprocess.Popen, list[str]]:
    """`asanlab run APP` started, read line by line on stderr until the app says "ready"."""
    proc = subprocess.Popen([sys.executable, "-m", "asanlab", "run", app, "--image", image, "--grace", "20",
                             "--format", "json"], cwd=folder, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if "ready" in line:
            break
    assert any("ready" in line for line in seen), "".join(seen)
    return proc, seen


@pytest.fixture(scope="module")
def built(work, docker_client):
    folder, env = work
    remove_images(docker_client, "e2e-php")  # a machine kept from an earlier run: build for real again
    proc = asanlab("build", "php.yml", cwd=folder, env=env, check=0)
    image_ref = proc.stdout.splitlines()[0]
    return image_ref, proc


def test_build_shows_progress_keeps_its_log_and_proves_instrumentation(built, work, docker_client):
    """The suite's PHP (the built-in default's, from Debian's source package). The release-tarball
    path (download over HTTP, php.net's sha256, the cache) is built for real by the PHP 8.4 recipe
    (test_swoole.php84_recipe) and the debug image (test_tools.debug_recipe)."""
    image_ref, proc = built
    folder, env = work
    assert "step 1/" in proc.stderr and "instrumentation check passed" in proc.stderr
    assert list((folder / ".asanlab" / "builds").glob("e2e-php-*.log"))
    image = docker_client.images.get(image_ref)
    assert image.labels["org.asanlab.recipe"] == "e2e-php"
    assert image.labels["org.asanlab.digest"].startswith(image_ref.split(":sha-")[1])
    assert any(t.endswith(":php8.2-asan-ubsan") for t in image.tags), image.tags


def test_unchanged_recipe_is_a_no_op(built, work):
    folder, env = work
    started = time.monotonic()
    proc = asanlab("build", "php.yml", cwd=folder, env=env, check=0)
    assert "is up to date" in proc.stderr
    assert proc.stdout.splitlines()[0] == built[0]
    assert time.monotonic() - started < 30


def test_run_captures_leak_and_double_free(built, work, docker_client):
    folder, env = work
    proc = asanlab("run", write_app(folder, "app", DEMO.read_text()), "--recipe", "php.yml", "--format", "json", cwd=folder, env=env, check=1)
    import json

    out = json.loads(proc.stdout)
    by_kind = {f["kind"]: f for f in out["findings"]}
    assert set(by_kind) == {"double-free", "direct-leak"}
    df, leak = by_kind["double-free"], by_kind["direct-leak"]
    assert df["count"] == 1 and df["category"] == "error"
    assert leak["leaked_bytes"] == 300 and leak["leaked_objects"] == 3 and leak["category"] == "leak"
    # The error's own stack is unwound completely (ASan's slow unwinder on errors) ...
    frames = df["example"]["frames"]
    assert any(fr["function"] == "zif_ffi_trampoline" and fr["file"].endswith("ext/ffi/ffi.c") and fr["line"]
               for fr in frames), frames
    # ... allocation stacks with frame pointers (`run`'s default with the agent): through FFI they stop in
    # libffi, which has none, and the PHP code that allocated tells the leak apart
    # (--full-stacks: test_replay_symbolizes_offline_in_the_sessions_image).
    assert leak["cut_short"] == "libffi.so.8" and leak["signature"].endswith(" | php leak_blocks app.php"), leak
    assert stored_options(folder, out)["fast_unwind_on_malloc"] == "1"
    # asanlab's agent named the PHP line of the double free (demo.php line 20), in the forked child.
    php = df["example"]["php"]
    assert {"function": "{main}", "file": "/app/app.php", "line": 20} in php["frames"], php
    # The leak, reported at exit, names the PHP code that allocated it (the agent's origins).
    origin = leak["example"]["php"]
    assert [(f["function"], f["file"], f["line"]) for f in origin["frames"][1:]] == \
        [("leak_blocks", "/app/app.php", 10), ("{main}", "/app/app.php", 14)], origin
    assert origin["allocated_objects"] == origin["listed_objects"] == 3, origin
    # The two processes (the script and its forked child) each left their own log.
    assert df["pids"] != leak["pids"]
    # Live one-line summaries appeared while it ran.
    assert "AddressSanitizer: double-free" in proc.stderr and "LeakSanitizer: 1 leak record(s), 300 bytes" in proc.stderr
    assert "demo: child" in proc.stderr

    session = out["session"]
    path = folder / ".asanlab" / "sessions" / session["id"]
    stored = read_json(path / "session.json")
    assert stored["status"] == "finished" and stored["stop_reason"] == "exited" and stored["exit_code"] == 1
    assert stored["schema"] == 1 and stored["recipe"]["name"] == "e2e-php" and stored["image"]["id"].startswith("sha256:")
    assert stored["environment"]["USE_ZEND_ALLOC"] == "0"
    assert len(list((path / "raw" / "sanitizer").iterdir())) == 2
    assert "demo: parent exits now" in (path / "raw" / "output.log").read_text()
    assert {f["kind"] for f in read_json(path / "findings.json")["findings"]} == {"double-free", "direct-leak"}
    assert containers_of(docker_client, session["id"]) == []

    # Replay re-reads the raw logs without Docker and finds the same.
    replay = asanlab("replay", "latest", "--format", "json", cwd=folder, env={**env, "DOCKER_HOST": "unix:///nonexistent"},
                     check=1)
    again = json.loads(replay.stdout)
    assert [(f["signature"], f["count"]) for f in again["findings"]] == \
           [(f["signature"], f["count"]) for f in out["findings"]]
    text = asanlab("replay", session["id"], cwd=folder, env=env, check=1).stdout
    assert "ERROR double-free" in text and "LEAK 300 byte(s) in 3 object(s)" in text
    assert "zif_ffi_trampoline /usr/src/php-src/ext/ffi/ffi.c:" in text
    assert "the C stack stops in libffi.so.8, built without frame pointers: --full-stacks" in text
    listed = asanlab("sessions", cwd=folder, env=env, check=0).stdout
    assert session["id"] in listed

    # A bug-report bundle: findings, raw logs, recipe, and php -v run in the session's image.
    import tarfile

    asanlab("replay", session["id"], "--bundle", "bug.tar.gz", cwd=folder, env=env, check=1)
    with tarfile.open(folder / "bug.tar.gz") as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames()}
        environment = tar.extractfile(f"asanlab-{session['id']}/environment.txt").read().decode()
        report = tar.extractfile(f"asanlab-{session['id']}/report.txt").read().decode()
    assert {"report.txt", "findings.json", "environment.txt", "recipe.yml", "command.txt", "session.json",
            "raw/output.log"} <= names
    assert len([n for n in names if n.startswith("raw/sanitizer/")]) == 2
    assert "PHP 8.2" in environment and "$ uname -a" in environment and "org.asanlab.recipe" in environment
    assert "attempting double-free" in report  # the full report, not only the summary
    assert containers_of(docker_client, session["id"]) == []


def stored_options(folder: Path, out: dict) -> dict[str, str]:
    """The ASAN_OPTIONS the session's app ran with."""
    stored = read_json(folder / ".asanlab" / "sessions" / out["session"]["id"] / "session.json")
    return dict(item.split("=", 1) for item in stored["environment"]["ASAN_OPTIONS"].split(":"))


UB_APP = """<?php
function misalign() {
    $p = FFI::new("char[16]");
    $q = FFI::cast("int32_t*", FFI::addr($p[1]));
    $q[0] = 7;
}
misalign();
"""


def test_a_ubsan_report_names_the_php_line(built, work):
    """A misaligned store in PHP's FFI (ext/ffi/ffi.c) from a PHP function: UBSan ends the process
    (no recovery) and the finding carries the PHP stack of that moment, from the agent's death
    callback."""
    import json

    folder, env = work
    proc = asanlab("run", write_app(folder, "ub", UB_APP), "--image", built[0], "--format", "json", cwd=folder,
                   env=env, check=1)
    [ub] = [f for f in json.loads(proc.stdout)["findings"] if f["category"] == "undefined"]
    assert "misaligned address" in ub["example"]["message"], ub
    assert [(f["function"], f["file"], f["line"]) for f in ub["example"]["php"]["frames"]] == \
        [("misalign", "/app/app.php", 5), ("{main}", "/app/app.php", 7)], ub["example"]["php"]
    text = asanlab("replay", "latest", cwd=folder, env=env, check=1).stdout
    assert "in PHP: misalign() /app/app.php:5 <- {main} /app/app.php:7" in text, text


def test_ctrl_c_stops_gracefully_and_keeps_the_leak_report(built, work, docker_client):
    folder, env = work
    proc, _ = run_until_ready(folder, env, write_app(folder, "sigterm", SIGTERM_APP), built[0])
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = proc.communicate(timeout=120)
    import json

    result = json.loads(out)
    assert proc.returncode == 1, err
    stored = result["session"]
    assert stored["stop_reason"] == "interrupted" and stored["status"] == "finished"
    [leak] = [f for f in result["findings"] if f["kind"] == "direct-leak"]
    assert leak["leaked_bytes"] == 200
    assert "got SIGTERM" in (folder / ".asanlab" / "sessions" / stored["id"] / "raw" / "output.log").read_text()
    assert containers_of(docker_client, stored["id"]) == []


def test_a_killed_asanlab_leaves_no_container_for_long(built, work, docker_client):
    """SIGKILL of asanlab mid-run: its container keeps running (nothing can stop it at that moment);
    the next `asanlab run` finds it, stops it gracefully so its leak report lands, closes its session
    and removes it."""
    import json

    folder, env = work
    proc, seen = run_until_ready(folder, env, write_app(folder, "killed", SIGTERM_APP), built[0])
    [sid] = [l.split("session ")[1].split()[0] for l in seen if "session " in l and " in /" in l][:1]
    proc.kill()
    proc.wait(timeout=30)
    assert [c.status for c in containers_of(docker_client, sid)] == ["running"]
    session_file = folder / ".asanlab" / "sessions" / sid / "session.json"
    assert json.loads(session_file.read_text())["status"] == "running"

    nxt = asanlab("run", write_app(folder, "after", "<?php echo 'hi';\n"), "--image", built[0], "--format", "json",
                  cwd=folder, env=env, check=0, timeout=300)
    assert f"closing session {sid}" in nxt.stderr, nxt.stderr
    assert containers_of(docker_client, sid) == []
    stored = json.loads(session_file.read_text())
    assert (stored["status"], stored["stop_reason"]) == ("finished", "orphaned")
    findings = json.loads((session_file.parent / "findings.json").read_text())["findings"]
    assert [f["leaked_bytes"] for f in findings if f["kind"] == "direct-leak"] == [200]
    assert "got SIGTERM" in (session_file.parent / "raw" / "output.log").read_text()


def test_a_killed_asanlabs_container_stops_itself_at_its_timeout(built, work, docker_client):
    """With --timeout, the container outlives a killed asanlab by its timeout only: the agent in
    PID 1 keeps the deadline (timeout + grace + a margin) and stops the app with SIGTERM, so the
    leak report is written even though nobody is left to ask for it."""
    import json

    folder, env = work
    proc = subprocess.Popen([sys.executable, "-m", "asanlab", "run", write_app(folder, "deadline", SIGTERM_APP),
                             "--image", built[0], "--timeout", "5", "--grace", "5"], cwd=folder,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    seen = []
    while time.monotonic() - started < 600:  # a loaded machine starts PHP under ASan slowly
        seen.append(proc.stderr.readline())
        if "ready" in seen[-1]:
            break
    ready = time.monotonic()  # the deadline counts from the app's start, not from asanlab's
    [sid] = [l.split("session ")[1].split()[0] for l in seen if "session " in l and " in /" in l][:1]
    proc.kill()
    proc.wait(timeout=30)
    [container] = containers_of(docker_client, sid)
    while time.monotonic() - ready < 300 and container.status != "exited":
        time.sleep(1)
        container.reload()
    assert container.status == "exited", container.status
    # Its deadline (timeout 5 + grace 5 + the agent's margin of 10), and 60 s for a loaded machine:
    # without the deadline it would run until the next asanlab stops it (never, here).
    assert time.monotonic() - ready < 5 + 5 + 10 + 60
    logs = container.logs().decode(errors="replace")
    assert "got SIGTERM" in logs, logs[-2000:]
    raw = folder / ".asanlab" / "sessions" / sid / "raw" / "sanitizer"
    assert any("Direct leak of 200 byte(s)" in f.read_text(errors="replace") for f in raw.iterdir())
    asanlab("run", write_app(folder, "deadline_after", "<?php echo 'hi';\n"), "--image", built[0], cwd=folder,
            env=env, check=0, timeout=300)  # and the next run closes its session
    assert containers_of(docker_client, sid) == []
    assert json.loads((raw.parent.parent / "session.json").read_text())["stop_reason"] == "orphaned"


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0, 6.0])
def test_asanlab_killed_at_any_point_is_recovered_by_the_next_run(built, work, docker_client, delay):
    """SIGKILL of `asanlab run` after `delay` seconds (from before its session exists to while the
    app serves): the next run leaves no container of it and no session "running"."""
    import json

    folder, env = work
    app = f"kill{str(delay).replace('.', '_')}"
    proc = subprocess.Popen([sys.executable, "-m", "asanlab", "run", write_app(folder, app, SIGTERM_APP),
                             "--image", built[0], "--grace", "20"], cwd=folder, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=30)
    asanlab("run", write_app(folder, f"{app}_after", "<?php echo 'hi';\n"), "--image", built[0], cwd=folder,
            env=env, check=0, timeout=300)
    sessions = folder / ".asanlab" / "sessions"
    running = [p.name for p in sessions.iterdir() if json.loads((p / "session.json").read_text())["status"] == "running"]
    assert running == []
    leftover = docker_client.containers.list(all=True, filters={"label": "org.asanlab.role=run"})
    assert leftover == [], [c.name for c in leftover]


def test_output_is_whole_past_the_daemons_log_rotation(built, work, docker_client):
    """30 MB of output, past a json-file `max-size` of 10m (this machine's daemon): every byte in
    raw/output.log, then the leak report."""
    import json

    folder, env = work
    app = write_app(folder, "loud", "<?php\n$line = str_repeat('a', 99) . \"\\n\";\n"
                                    "for ($i = 0; $i < 300000; $i++) { echo $line; }\n"
                                    "echo \"last line\\n\";\n$f = FFI::cdef('void *malloc(size_t);');\n$f->malloc(200);\n")
    proc = asanlab("run", app, "--image", built[0], "--format", "json", cwd=folder, env=env, check=1, timeout=600)
    result = json.loads(proc.stdout)
    log = (folder / ".asanlab" / "sessions" / result["session"]["id"] / "raw" / "output.log").read_bytes()
    assert log.count(b"a" * 99 + b"\n") == 300000 and b"\nlast line\n" in log, len(log)
    # After the script's last line only stderr may come: the symbolizer's complaint about a frame
    # the fast unwinder misread (`[stack]`), when the leak report is written.
    after = log.split(b"\nlast line\n", 1)[1]
    assert all(line.startswith(b"LLVMSymbolizer: ") for line in after.splitlines()), after[:2000]
    assert [f["leaked_bytes"] for f in result["findings"] if f["kind"] == "direct-leak"] == [200]


def test_ctrl_c_while_php_starts_still_stops_it_gracefully(built, work, docker_client):
    """Ctrl-C as soon as the session exists, before PHP can have installed a SIGTERM handler: the
    SIGTERM waits for sigterm.php's mark, so PID 1 exits by its handler (LeakSanitizer runs), not
    by SIGKILL after the grace period."""
    import json

    folder, env = work
    proc = subprocess.Popen([sys.executable, "-m", "asanlab", "run", write_app(folder, "early", PLAIN_APP),
                             "--image", built[0], "--grace", "20", "--format", "json"], cwd=folder,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while not any(" in /" in line and "session " in line for line in seen):
        seen.append(proc.stderr.readline())
        assert seen[-1] or proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()  # a hang fails this test, and must not leave a container for the next ones
    session = json.loads(out)["session"]
    assert session["stop_reason"] == "interrupted", session
    assert session["exit_code"] not in (137, None) and "did not exit within the grace period" not in err, \
        (session["exit_code"], err[-2000:])
    assert containers_of(docker_client, session["id"]) == []


def test_timeout_stops_the_app(built, work, docker_client):
    folder, env = work
    import json

    proc = asanlab("run", write_app(folder, "timeout", SIGTERM_APP), "--image", built[0], "--timeout", "5", "--format", "json",
                   cwd=folder, env=env, check=1, timeout=300)
    result = json.loads(proc.stdout)
    assert result["session"]["stop_reason"] == "timeout"
    assert [f["leaked_bytes"] for f in result["findings"] if f["kind"] == "direct-leak"] == [200]
    assert containers_of(docker_client, result["session"]["id"]) == []


PLAIN_APP = """<?php
// Leaks 200 bytes, then waits, with no signal handler of its own.
$f = FFI::cdef("void *malloc(size_t);");
$f->malloc(200);
echo "ready\\n";
while (true) { sleep(1); }
"""


def test_a_script_without_a_handler_still_reports_its_leak_when_stopped(built, work, docker_client):
    """As the container's PID 1 such a script would ignore SIGTERM and be killed: no leak report."""
    folder, env = work
    import json

    started = time.monotonic()
    proc = asanlab("run", write_app(folder, "plain", PLAIN_APP), "--image", built[0], "--timeout", "5", "--format", "json",
                   cwd=folder, env=env, check=1, timeout=300)
    result = json.loads(proc.stdout)
    assert result["session"]["stop_reason"] == "timeout"
    assert result["session"]["exit_code"] != 137  # it exited by itself (LeakSanitizer sets the code), not by SIGKILL
    assert [f["leaked_bytes"] for f in result["findings"] if f["kind"] == "direct-leak"] == [200]
    assert "did not exit within the grace period" not in proc.stderr
    assert time.monotonic() - started < 60
    assert containers_of(docker_client, result["session"]["id"]) == []


def test_bad_checksum_builds_nothing(work, mirror, docker_client):
    folder, env = work
    version, url, _ = mirror
    (folder / "bad.yml").write_text(
        f'name: e2e-bad\nphp:\n  version: "{version}"\n  source:\n    url: {url}/php-{version}.tar.xz\n'
        f'    sha256: "{"ab" * 32}"\n')
    before = {i.id for i in docker_client.images.list()}
    proc = asanlab("build", "bad.yml", cwd=folder, env={**env, "ASANLAB_CACHE": str(folder / "cache-bad")}, check=3)
    assert "sha256 mismatch" in proc.stderr and "ab" * 32 in proc.stderr
    assert not (folder / "cache-bad" / "sources").exists() or not any((folder / "cache-bad" / "sources").rglob("*.xz"))
    assert {i.id for i in docker_client.images.list()} == before


def test_bad_recipe_is_refused_before_docker(work):
    folder, env = work
    (folder / "typo.yml").write_text('name: x\nphp:\n  version: "8.2.1"\n  confgure: [--enable-x]\n')
    proc = asanlab("build", "typo.yml", cwd=folder, env={**env, "DOCKER_HOST": "unix:///nonexistent"}, check=2)
    assert 'typo.yml:4: php.confgure: unknown key; did you mean "configure"?' in proc.stderr


def test_missing_daemon_is_one_clear_sentence(work):
    folder, env = work
    proc = asanlab("run", "app/app.php", "--image", "x", cwd=folder,
                   env={**env, "DOCKER_HOST": "unix:///nonexistent.sock"}, check=3)
    assert "cannot reach the Docker daemon" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_build_shows_the_tail_and_the_log(work, mirror, base_image, docker_client):
    folder, env = work
    version, _, _ = mirror
    # --with-openssl without libssl-dev: PHP's configure stops, as a user's typo'd recipe would.
    (folder / "broken.yml").write_text(
        f'name: e2e-broken\nbase_image: {base_image}\nphp:\n  version: "{version}"\n  configure: [--with-openssl]\n')
    proc = asanlab("build", "broken.yml", cwd=folder, env=env, check=3)
    assert "docker build failed at step" in proc.stderr
    assert "  | " in proc.stderr and "openssl" in proc.stderr.lower()
    log = proc.stderr.split("full build log: ")[1].strip().splitlines()[0]
    assert Path(log).exists() and "./configure" in Path(log).read_text()
    assert docker_client.images.list(filters={"label": "org.asanlab.recipe=e2e-broken"}) == []
    leftovers = docker_client.containers.list(all=True, filters={"status": "exited"})
    assert not [c for c in leftovers if c.attrs["Config"].get("Cmd") and "configure" in " ".join(c.attrs["Config"]["Cmd"])]


FAKE_APT = """#!/bin/sh
# apt as it answered on trixie while its index named an upload the pool did not serve yet.
case "$(basename "$0") $1" in
  "apt-get update") exit 0 ;;
  "apt-get source") echo "E: Failed to fetch http://deb.debian.org/debian/pool/main/p/php8.4/php8.4_8.4.27.orig.tar.xz  404  Not Found" >&2; exit 100 ;;
  "apt-cache showsrc") [ "$2" = php8.4 ] && printf 'Package: php8.4\\nVersion: 8.4.27-1~deb13u1\\n'; exit 0 ;;
esac
exit 1
"""


@pytest.mark.parametrize("package, said", [
    ("php8.4", "Debian's index names php8.4 8.4.27-1~deb13u1, but the mirror did not serve its files"),
    ("php9.9", "Debian's index for this base image has no source package php9.9 (php.source.debian)")],
    ids=["missing-upload", "no-such-package"])
def test_a_debian_source_the_mirror_does_not_serve_is_named_with_what_to_do(base_image, docker_client, tmp_path,
                                                                             package, said):
    """The build's Debian-source step, in the base image, with apt answering as the mirror did (an
    error path: the real mirror's disagreement comes and goes)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("apt-get", "apt-cache"):
        (fake / name).write_text(FAKE_APT)
        (fake / name).chmod(0o755)
    script = REPO / "images" / "scripts" / "fetch-debian-source.sh"
    container = docker_client.containers.run(
        base_image, ["sh", "/fetch.sh", package, "/usr/src/php-src"], detach=True, network_mode="none",
        environment={"PATH": "/fake:/usr/sbin:/usr/bin:/sbin:/bin"},
        volumes={str(fake): {"bind": "/fake", "mode": "ro"}, str(script): {"bind": "/fetch.sh", "mode": "ro"}})
    try:
        status = container.wait(timeout=120)["StatusCode"]
        err = container.logs(stdout=False).decode()
    finally:
        container.remove(force=True)
    assert status == 1 and said in err, err
    if package == "php8.4":
        assert "404" in err and 'php.version "X.Y.Z" without php.source' in err, err


def test_replay_symbolizes_offline_in_the_sessions_image(built, work, docker_client):
    folder, env = work
    import json

    # As from a production debug run without a symbolizer: module+offset frames only.
    proc = asanlab("run", write_app(folder, "nosym", DEMO.read_text()), "--image", built[0], "-e", "ASAN_OPTIONS=symbolize=0",
                   "--full-stacks", "--format", "json", cwd=folder, env=env, check=1)
    result = json.loads(proc.stdout)
    sid = result["session"]["id"]
    frames = [fr for f in result["findings"] for fr in f["example"]["frames"]]
    assert frames and not any(fr["file"] for fr in frames)
    replay = asanlab("replay", sid, "--symbolize", "--format", "json", cwd=folder, env=env, check=1)
    assert "symbolized" in replay.stderr
    again = json.loads(replay.stdout)
    assert {f["kind"] for f in again["findings"]} == {"double-free", "direct-leak"}
    for f in again["findings"]:  # --full-stacks: the allocation stack too goes through libffi
        assert any(fr["function"] == "zif_ffi_trampoline" and fr["file"].endswith("ext/ffi/ffi.c")
                   for fr in f["example"]["frames"]), f["example"]["frames"]
        assert f["cut_short"] is None, f
    assert stored_options(folder, result)["fast_unwind_on_malloc"] == "0"
    # The answers are kept: a later replay needs no Docker.
    offline = asanlab("replay", sid, "--format", "json", cwd=folder, env={**env, "DOCKER_HOST": "unix:///nonexistent"},
                      check=1)
    assert [f["signature"] for f in json.loads(offline.stdout)["findings"]] == \
           [f["signature"] for f in again["findings"]]
    assert containers_of(docker_client, sid) == []

    # The same logs handed over without their session (as from a production debug run): `report`
    # says once that they are unsymbolized, and with --image symbolizes them first, finding what
    # the symbolized session finds.
    import shutil

    logs = folder / f"nosym-logs-{sid}"  # the project folder is shared by other tests' copies
    shutil.copytree(folder / ".asanlab" / "sessions" / sid / "raw" / "sanitizer", logs)
    plain = asanlab("report", logs, "--format", "json", cwd=folder, env=env)
    assert plain.stderr.count("not symbolized (module+offset)") == 1 and "--image IMAGE" in plain.stderr
    symbolized = asanlab("report", logs, "--image", built[0], "--format", "json", cwd=folder, env=env, check=1)
    assert "symbolized" in symbolized.stderr and "not symbolized" not in symbolized.stderr
    assert sorted(f["signature"] for f in json.loads(symbolized.stdout)["findings"]) == \
           sorted(f["signature"] for f in again["findings"])


def test_demo_command(built, work):
    """`asanlab demo` (what `make demo` runs) on the test's recipe: exit 1, both bugs found."""
    folder, env = work
    proc = asanlab("demo", "--recipe", "php.yml", cwd=folder, env=env, check=1)
    assert "ERROR double-free" in proc.stdout and "LEAK 300 byte(s) in 3 object(s)" in proc.stdout


HOSTILE_APP = r"""<?php
// A hostile app: wherever it can write (every folder asanlab mounts read-write) it plants links to a
// host file and folder, /dev/zero, FIFOs, a huge sparse file and a hard link, under the names asanlab
// reads; it prints control characters; it serves a few requests through the recording proxy; and it
// also leaks, which must still be reported.
$canary = getenv('HOST_CANARY');
$names = ['sanitizer.90001', 'php-backtrace.90001', 'php-origin.90001', 'crash.90001', 'answers.90001',
          'trigger', 'trigger.tmp', 'php-heap.90001', 'php-census.90001'];
foreach (['/asanlab/logs', '/asanlab/php', '/asanlab/state'] as $dir) {
    foreach ($names as $name) {
        @symlink($canary, "$dir/$name");
    }
    @symlink(dirname($canary), "$dir/hostdir");
    @symlink('/dev/zero', "$dir/sanitizer.90002");
    @symlink('/dev/zero', "$dir/php-origin.90002");
    posix_mkfifo("$dir/sanitizer.90003", 0644);
    posix_mkfifo("$dir/php-backtrace.90003", 0644);
    posix_mkfifo("$dir/crash.90003", 0644);
    $f = fopen("$dir/sanitizer.90004", 'w');
    ftruncate($f, 100 * 1024 * 1024 * 1024);  // 100 GiB, sparse
    fclose($f);
    file_put_contents("$dir/plain.90005", "==1==ERROR: AddressSanitizer: \x1b]0;owned\x07\x1b[2J\n");
    @link("$dir/plain.90005", "$dir/hard.90005");
    @mkdir("$dir/sub");
    @symlink($canary, "$dir/sub/sanitizer.90006");
    // A device node (the host's /dev/null: 1,3) on the host's disk, and a setuid-root program there.
    $made = @posix_mknod("$dir/sanitizer.90007", POSIX_S_IFCHR | 0666, 1, 3);
    echo "mknod in $dir: ", $made ? "made" : "refused", "\n";
    copy('/bin/sh', "$dir/setuid.90008");
    chmod("$dir/setuid.90008", 04755);
}
echo "control characters: \x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b\n";
$f = FFI::cdef("void *malloc(size_t);");
$f->malloc(123);

$server = stream_socket_server('tcp://0.0.0.0:8080', $errno, $errstr);
echo "ready\n";
while ($conn = stream_socket_accept($server, 60)) {
    $request = fread($conn, 65536);
    fwrite($conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    fclose($conn);
    if (str_starts_with((string) $request, 'GET /quit')) {
        break;
    }
}
"""


def test_a_hostile_app_reaches_no_host_file_and_its_leak_is_still_reported(built, work, docker_client, tmp_path):
    """Links, FIFOs, /dev/zero, a 100 GiB sparse file, a hard link and control characters in every
    read-write mount, hostile bytes through the recording proxy: no host file outside the session
    changes or lands in any artifact, nothing hangs, the leak is reported, exit 1, session finished."""
    import json
    import socket
    import tarfile

    from .conftest import free_port

    folder, env = work
    host = tmp_path / "host"
    host.mkdir()
    canary = host / "canary.txt"
    secret = b"host secret: must never leave the host\n"
    canary.write_bytes(secret)
    (host / "other.txt").write_bytes(secret)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in host.iterdir()}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "asanlab", "run", write_app(folder, "hostile", HOSTILE_APP),
                             "--recipe", "php.yml", "-p", f"{port}:8080", "--record", "-e", f"HOST_CANARY={canary}",
                             "--format", "json", "--timeout", "600"],
                            cwd=folder, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while True:  # until the app serves through the proxy
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
                    if c.recv(100).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the hostile app never served"
            time.sleep(0.5)
        hostile = [b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nX-Bytes: \xe9\x80\x00\r\n\r\n",
                   b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\x85abcdefghi",
                   b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
                   b"GET /quit HTTP/1.1\r\nHost: x\r\n\r\n"]
        for data in hostile:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(data)
                try:
                    c.recv(100)
                except OSError:
                    pass
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr.decode(errors="replace")[-3000:]
    assert b"\x1b" not in stdout and b"\x1b" not in stderr and b"\x07" not in stderr
    assert b"control characters: \\x1b]0;owned\\x07" in stderr
    out = json.loads(stdout)
    leak = next(f for f in out["findings"] if f["kind"] == "direct-leak" and f["leaked_bytes"] == 123)
    assert leak["example"]["php"]["frames"][-1]["file"] == "/app/app.php", leak
    sid = out["session"]["id"]
    path = folder / ".asanlab" / "sessions" / sid
    stored = read_json(path / "session.json")
    assert stored["status"] == "finished" and stored["traffic"]["requests"] >= 3, stored.get("traffic")
    assert any(n["kind"] == "not-read" for n in out.get("notices", [])), out.get("notices")
    assert containers_of(docker_client, sid) == []
    # No device node: the container cannot make one (CAP_MKNOD dropped). The setuid-root program it
    # left is in a session folder no other host user can enter.
    for mount in (b"/asanlab/logs", b"/asanlab/php", b"/asanlab/state"):
        assert b"mknod in " + mount + b": refused" in stderr, stderr.decode(errors="replace")[-3000:]
    assert not (path / "raw" / "sanitizer" / "sanitizer.90007").exists()
    assert os.stat(path / "raw" / "sanitizer" / "setuid.90008").st_mode & 0o4000
    assert (path.stat().st_mode & 0o777) == 0o700

    # The bug-report archive a user would attach to a public issue: no host file in it, no member
    # outside its folder.
    asanlab("replay", sid, "--bundle", "bug.tar.gz", cwd=folder, env=env, check=1)
    with tarfile.open(folder / "bug.tar.gz") as tar:
        members = tar.getmembers()
        assert all(m.name.startswith(f"asanlab-{sid}/") and ".." not in m.name and m.isfile() for m in members)
        assert all(m.mode & 0o7000 == 0 for m in members)  # no setuid program travels in a bundle
        for m in members:
            assert secret not in tar.extractfile(m).read(), m.name
        names = {m.name.split("/", 1)[1] for m in members}
    assert "raw/sanitizer/plain.90005" in names and not any("90001" in n or "hostdir" in n or "90006" in n
                                                            for n in names), names
    # Nothing on the host outside the session changed.
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in host.iterdir()} == before
