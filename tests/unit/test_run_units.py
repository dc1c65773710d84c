import json

import pytest

from asanlab.image import check, recipe
from asanlab import containers, run, session
from asanlab.reports import text
from asanlab.errors import EXIT_USAGE, SessionError, UsageError
from asanlab.reports.findings import group
from asanlab.reports.sanitizers import parse

from .test_reports import fixture_text


def test_ports_bind_loopback_unless_told():
    assert run.parse_ports(["9501:9501"]) == {"9501/tcp": ("127.0.0.1", 9501)}
    assert run.parse_ports(["0.0.0.0:8080:80/udp"]) == {"80/udp": ("0.0.0.0", 8080)}
    with pytest.raises(UsageError, match="-p 95x1"):
        run.parse_ports(["95x1"])
    assert run.parse_ports(["[::1]:8080:80"]) == {"80/tcp": ("::1", 8080)}


@pytest.mark.parametrize("spec,why", [("127.0.0.256:18083:80", "127.0.0.256 is not an IP address"),
                                      ("1.2.3:80:80", "1.2.3 is not an IP address"),
                                      ("70000:80", "port 70000 is out of range"), ("0:80", "port 0 is out of range")])
def test_a_mistyped_address_is_refused_not_widened(spec, why):
    """Docker publishes on every address when it cannot use the one given: asanlab refuses first."""
    with pytest.raises(UsageError, match=why):
        run.parse_ports([spec])


def test_env():
    assert run.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(UsageError) as e:
        run.parse_env(["NOEQUALS"])
    assert e.value.exit_code == EXIT_USAGE


def test_environment_keeps_log_path_and_applies_recipe_overrides():
    r = recipe.parse('name: x\nphp:\n  version: "8.2.1"\nruntime:\n  asan_options:\n    quarantine_size_mb: 16\n')
    # A recipe cannot name log_path (test_recipe.py); the user's -e can, and asanlab's wins.
    env = run.environment(r, {"APP_ENV": "test", "ASAN_OPTIONS": "log_path=/elsewhere"}, suppressions=True)
    assert env["USE_ZEND_ALLOC"] == "0" and env["ZEND_DONT_UNLOAD_MODULES"] == "1" and env["USE_TRACKED_ALLOC"] == "1"
    assert "quarantine_size_mb=16" in env["ASAN_OPTIONS"]
    assert "log_path=/asanlab/logs/sanitizer" in env["ASAN_OPTIONS"] and "/elsewhere" not in env["ASAN_OPTIONS"]
    assert "log_path=/asanlab/logs/sanitizer" in env["UBSAN_OPTIONS"]
    assert env["LSAN_OPTIONS"] == "suppressions=/asanlab/config/lsan.supp"
    assert env["APP_ENV"] == "test"


def test_ubsan_reads_asanlabs_suppressions_and_they_silence_only_misaligned_accesses(state, tmp_path):
    """Every run names asanlab/data/ubsan.supp and has it in its config folder; the images recover
    from misaligned accesses only, so an entry of another kind would never be honoured."""
    from asanlab.run.lifecycle import _volumes

    assert "suppressions=/asanlab/config/ubsan.supp" in run.environment(None, {}, False)["UBSAN_OPTIONS"]
    s = session.create({"command": ["php", "/app/a.php"], "app": str(tmp_path / "a.php")})
    volumes = _volumes(s, tmp_path / "a.php", [], {})
    assert volumes[str(s.path / "config")] == {"bind": "/asanlab/config", "mode": "ro"}
    shipped = (s.path / "config" / "ubsan.supp").read_text().splitlines()
    entries = [line for line in shipped if line.strip() and not line.startswith("#")]
    assert entries and all(line.startswith("alignment:") for line in entries), entries
    for line in entries:  # each says why, in the comment just above it
        assert shipped[shipped.index(line) - 1].startswith("#"), line


def test_leak_checker_off():
    r = recipe.parse('name: x\nphp:\n  version: "8.2.1"\nsanitizers:\n  leak: false\n')
    assert "detect_leaks=0" in run.environment(r, {}, False)["ASAN_OPTIONS"]


def test_secrets_are_masked_in_the_session():
    from asanlab.run.environment import masked

    assert masked({"DB_PASSWORD": "x", "API_TOKEN": "y", "MODE": "z"}) == \
           {"DB_PASSWORD": "***", "API_TOKEN": "***", "MODE": "z"}


R = recipe.parse('name: x\nphp:\n  version: "8.2.1"\nswoole:\n  version: "6.1.9"\n')


def test_check_output_passes():
    out = ("binary /opt/php/bin/php 76\nbinary /opt/php/lib/php/extensions/x/swoole.so 1200\nri swoole ok\n"
           "leak-ran\nleak-exit 1\nleak-report Direct leak of 4243 byte\noverflow-exit 1\n"
           "overflow-report AddressSanitizer: heap-buffer-overflow\n")
    assert check.parse_output(out, R).ok


@pytest.mark.parametrize("drop,failure", [
    ("binary /opt/php/lib/php/extensions/x/swoole.so 1200\n", "swoole.so was not installed"),
    ("leak-report Direct leak of 4243 byte\n", "leak canary"),
    ("overflow-report AddressSanitizer: heap-buffer-overflow\n", "heap-buffer-overflow canary"),
])
def test_check_output_failures(drop, failure):
    out = ("binary /opt/php/bin/php 76\nbinary /opt/php/lib/php/extensions/x/swoole.so 1200\nri swoole ok\n"
           "leak-report Direct leak of 4243 byte\noverflow-report AddressSanitizer: heap-buffer-overflow\n")
    result = check.parse_output(out.replace(drop, ""), R)
    assert not result.ok and any(failure in f for f in result.failures)


DEBUG = recipe.parse('name: x\nphp:\n  version: "8.2.1"\nswoole:\n  version: "6.1.9"\ntools: [gdb, valgrind]\n')
DEBUG_OUT = ("binary /opt/php/bin/php 0\nbinary /opt/php/lib/php/extensions/x/swoole.so 0\nri swoole ok\n"
             "tool gdb ok\ntool valgrind ok\ngdbinit php ok\ngdbinit swoole ok\nvalgrind-leak-report 4243\n")


def test_a_debug_image_is_checked_for_its_tools_not_for_asan():
    assert check.parse_output(DEBUG_OUT, DEBUG).ok


@pytest.mark.parametrize("change,failure", [
    (("tool valgrind ok", "tool valgrind missing"), "valgrind is not installed"),
    (("gdbinit swoole ok\n", ""), "gdb's swoole.gdbinit is missing"),
    (("valgrind-leak-report 4243\n", ""), "Valgrind did not report a 4243-byte leak canary"),
])
def test_a_debug_image_without_what_it_promised_fails(change, failure):
    assert failure in check.parse_output(DEBUG_OUT.replace(*change), DEBUG).failures


def test_uninstrumented_extension_fails_the_check():
    out = ("binary /opt/php/bin/php 76\nbinary /opt/php/lib/php/extensions/x/swoole.so 0\nri swoole failed\n"
           "leak-report x\noverflow-report x\n")
    failures = check.parse_output(out, R).failures
    assert any("swoole.so has no AddressSanitizer checks" in f for f in failures)
    assert any(f.startswith("`php --ri swoole` failed") for f in failures)


def test_session_roundtrip_and_latest(state):
    with pytest.raises(SessionError, match="no sessions yet"):
        session.load("latest")
    s = session.create({"command": ["php", "/app/a.php"]})
    (s.sanitizer_dir / "sanitizer.1").write_text(fixture_text("double-free"))
    reports, findings = session.reports_and_findings(s)
    assert [f.kind for f in findings] == ["double-free"]
    s.data["status"] = "finished"
    s.save()
    again = session.load("latest")
    assert again.id == s.id and again.data["status"] == "finished" and again.data["schema"] == 1
    assert session.load(str(s.path)).id == s.id
    with pytest.raises(SessionError, match="no session 'nope'"):
        session.load("nope")
    leftovers = [p.name for p in s.path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # atomic writes leave no temporary files


def test_newer_schema_refused(state):
    s = session.create({})
    s.data["schema"] = 99
    s.save()
    with pytest.raises(SessionError, match="newer asanlab"):
        session.load(s.id)


def test_text_view_groups_and_folds():
    reports = parse(fixture_text("double-free")) + parse(fixture_text("leak"))
    out = text.render({"id": "s1", "command": ["php", "a.php"], "image": {"ref": "img"}, "status": "finished",
                       "stop_reason": "exited", "exit_code": 1}, group(reports))
    assert "3 finding(s): 1 error, 2 leak" in out
    assert out.index("ERROR double-free") < out.index("LEAK 348 byte(s) in 4 object(s)")
    assert "* #4 zif_ffi_trampoline /usr/src/php-src/ext/ffi/ffi.c:2830" in out
    assert "0x" not in out.split("SUMMARY")[0].split("signature:")[1].split("\n")[0]
    data = json.loads(text.render_json(None, group(reports)))
    assert data["schema"] == 1 and len(data["findings"]) == 3


class FakeContainer:
    def __init__(self):
        self.removed = 0
        self.name = "fake"

    def remove(self, force=False):
        self.removed += 1


class FakeClient:
    def __init__(self):
        self.made = []

        class Containers:
            def create(inner, image, **kwargs):
                c = FakeContainer()
                self.made.append((c, kwargs))
                return c

        self.containers = Containers()


def test_container_removed_when_the_block_raises(monkeypatch):
    monkeypatch.delenv(containers.KEEP_ENV, raising=False)
    client = FakeClient()
    with pytest.raises(RuntimeError):
        with containers.temporary(client, "img", role="run", session="s1"):
            raise RuntimeError("boom")
    [(c, kwargs)] = client.made
    assert c.removed == 1
    assert kwargs["labels"] == {"org.asanlab.role": "run", "org.asanlab.session": "s1",
                                "org.asanlab.owner": containers.owner()}


def test_an_owner_is_gone_only_when_its_process_is():
    import os
    import socket

    assert not containers.owner_is_gone(containers.owner())
    dead = f"{socket.gethostname()}:{2**22 + 17}:1"  # above pid_max's default: no such process
    assert containers.owner_is_gone(dead)
    reused = f"{socket.gethostname()}:{os.getpid()}:1"  # this PID, but another process's start time
    assert containers.owner_is_gone(reused)
    assert not containers.owner_is_gone("another-host:1:1") and not containers.owner_is_gone("garbage")


def test_keep_container_for_debugging(monkeypatch):
    monkeypatch.setenv(containers.KEEP_ENV, "1")
    client = FakeClient()
    with containers.temporary(client, "img", role="run"):
        pass
    assert client.made[0][0].removed == 0


def test_command_line_usage_errors_are_clear(tmp_path, cli):
    for args in (["run", "x.php", "--no-such-option"], ["matrix"], ["replay"]):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and ("No such option" in proc.stderr or "Missing argument" in proc.stderr)


def test_unknown_session_is_a_usage_error(tmp_path, cli):
    proc = cli("replay", "nope", cwd=tmp_path, env={"ASANLAB_HOME": str(tmp_path)})
    assert proc.returncode == 2 and "no session 'nope'" in proc.stderr


def test_user_sanitizer_options_are_merged_not_replacing():
    env = run.environment(None, {"ASAN_OPTIONS": "symbolize=0:log_path=/x", "UBSAN_OPTIONS": "halt_on_error=1"}, False)
    assert "symbolize=0" in env["ASAN_OPTIONS"] and "log_path=/asanlab/logs/sanitizer" in env["ASAN_OPTIONS"]
    assert "detect_leaks=1" in env["ASAN_OPTIONS"] and "/x" not in env["ASAN_OPTIONS"]
    assert "halt_on_error=1" in env["UBSAN_OPTIONS"] and "print_stacktrace=1" in env["UBSAN_OPTIONS"]


def test_a_bug_in_asanlab_is_not_a_finding(tmp_path, cli, monkeypatch):
    """An unexpected exception exits 70 (never 1, which CI reads as findings), in one line that names
    the file holding the traceback."""
    import asanlab.reports.suppressions

    def broken(files):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(asanlab.reports.suppressions, "read", broken)
    log = tmp_path / "a.log"
    log.write_text("")
    proc = cli("report", log, cwd=tmp_path, env={"ASANLAB_HOME": str(tmp_path / "home")})
    assert proc.returncode == 70, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error: ZeroDivisionError: a bug" in proc.stderr
    crash = list((tmp_path / "home" / "crashes").glob("*.txt"))
    assert len(crash) == 1 and "ZeroDivisionError" in crash[0].read_text() and str(crash[0]) in proc.stderr


@pytest.mark.parametrize("args,name", [
    (["run", "x.php", "--timeout", "0"], "--timeout"), (["run", "x.php", "--timeout", "nan"], "--timeout"),
    (["run", "x.php", "--timeout", "-5"], "--timeout"), (["run", "x.php", "--grace", "-1"], "--grace"),
    (["run", "x.php", "--grace", "inf"], "--grace"),
    (["soak", "x.php", "--url", "http://127.0.0.1:1/", "-c", "0"], "--concurrency"),
    (["soak", "x.php", "--url", "http://127.0.0.1:1/", "--threshold", "nan"], "--threshold"),
    (["soak", "x.php", "--url", "http://127.0.0.1:1/", "--samples", "0"], "--samples"),
    (["soak", "x.php", "--url", "http://127.0.0.1:1/", "--ready-timeout", "0"], "--ready-timeout"),
])
def test_numbers_out_of_range_are_usage_errors(tmp_path, cli, args, name):
    """0, nan, inf or a negative number would mean no timeout or lose the leak report: refused
    before anything starts, naming the option."""
    (tmp_path / "x.php").write_text("<?php\n")
    proc = cli(*args, cwd=tmp_path, env={"ASANLAB_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2, proc.stderr
    assert name in proc.stderr and "expected a number" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "home" / "sessions").exists()


def test_a_broken_session_hides_no_other(state, cli):
    tmp_path = state
    home = {"ASANLAB_HOME": str(tmp_path / "state")}
    good = session.create({"command": ["php", "/app/a.php"]})
    for name, body in (("20000101-000000-bad1", "{not json"), ("20000101-000000-bad2", "[1, 2]")):
        (session.sessions_dir() / name).mkdir()
        (session.sessions_dir() / name / "session.json").write_text(body)
    proc = cli("sessions", cwd=tmp_path, env=home)
    assert proc.returncode == 0, proc.stderr
    assert "20000101-000000-bad1  unreadable: " in proc.stdout and "not readable JSON" in proc.stdout
    assert "20000101-000000-bad2  unreadable: " in proc.stdout and "not an asanlab session" in proc.stdout
    assert good.id in proc.stdout
    assert cli("replay", "20000101-000000-bad2", cwd=tmp_path, env=home).returncode == 2


def test_replay_of_a_session_without_its_logs_says_so(state, cli):
    """Not "0 finding(s)": the logs that would hold them are not there."""
    import shutil

    s = session.create({"command": ["php", "/app/a.php"]})
    shutil.rmtree(s.path / "raw")
    proc = cli("replay", s.id, cwd=state, env={"ASANLAB_HOME": str(state / "state")})
    assert proc.returncode == 2 and "raw logs" in proc.stderr and "are gone" in proc.stderr
    assert "finding" not in proc.stdout


def test_fifos_and_devices_are_refused_not_read(tmp_path, cli):
    """A FIFO or /dev/zero given where a file is expected would block or be read without end."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    home = {"ASANLAB_HOME": str(tmp_path / "home")}
    (tmp_path / "x.php").write_text("<?php\n")
    for args, says in ((["report", fifo], "not a regular file or a folder"),
                       (["report", "/dev/zero"], "not a regular file or a folder"),
                       (["report", tmp_path / "x.php", "--suppressions", fifo], "not a regular file"),
                       (["soak", "x.php", "--url", "http://127.0.0.1:1/", "--image", "x", "--body-file", "/dev/zero"],
                        "--body-file /dev/zero: not a regular file"),
                       (["soak", "x.php", "--url", "http://127.0.0.1:1/", "--image", "x", "--requests-file", fifo],
                        "not a regular file")):
        proc = cli(*args, cwd=tmp_path, env=home)
        assert proc.returncode == 2 and says in proc.stderr, (args, proc.stderr)


def test_a_session_left_running_by_a_killed_asanlab_is_closed(state):
    """Killed before its container existed: no container to stop, but the session is closed as
    orphaned by the next run, with what its logs hold; a live owner's session is left alone."""
    import socket

    dead = session.create({"command": ["php", "/app/a.php"], "owner": f"{socket.gethostname()}:{2**22 + 17}:1"})
    (dead.sanitizer_dir / "sanitizer.1").write_text(fixture_text("double-free"))
    alive = session.create({"command": ["php", "/app/a.php"], "owner": containers.owner()})
    client = FakeClient()
    client.containers.list = lambda **kw: []
    assert run.recover_orphans(client) == [dead.id]
    closed = session.load(dead.id).data
    assert (closed["status"], closed["stop_reason"], closed["counts"]["findings"]) == ("finished", "orphaned", 1)
    assert session.load(alive.id).data["status"] == "running"


def test_sessions_refuses_a_format_it_cannot_print(state, cli):
    proc = cli("sessions", "--format", "sarif", cwd=state, env={"ASANLAB_HOME": str(state / "state")})
    assert proc.returncode == 2 and "sarif" in proc.stderr


@pytest.mark.parametrize("agent,full_stacks,fast", [("/opt/asanlab/agent.so", False, True),
                                                    ("/opt/asanlab/agent.so", True, False), (None, True, False)])
def test_the_unwinder_follows_full_stacks(tmp_path, agent, full_stacks, fast):
    """Frame pointers only (3-4x faster) unless --full-stacks; the agent, which names each leak's PHP
    line, records origins either way."""
    from pathlib import Path

    from asanlab.run.lifecycle import _environment

    opts = run.RunOptions(app=Path("/x/app.php"), image="img", agent=agent, full_stacks=full_stacks)
    env, _ = _environment(opts, {}, False)
    assert f"fast_unwind_on_malloc={int(fast)}" in env["ASAN_OPTIONS"], env["ASAN_OPTIONS"]
    assert ("ASANLAB_PHP_ORIGINS" in env) == (agent is not None)


def test_a_soaks_options_keep_the_unwinder_it_was_given():
    from pathlib import Path

    from asanlab.run.lifecycle import _environment
    from asanlab.soak.driver import SOAK_QUARANTINE

    for full_stacks in (False, True):
        opts = run.RunOptions(app=Path("/x/app.php"), image="img", agent=None, full_stacks=full_stacks,
                              companion=run.Companion(kind="soak", driver=lambda ctx: None, asan_options=SOAK_QUARANTINE))
        asan = _environment(opts, {}, False)[0]["ASAN_OPTIONS"]
        assert "quarantine_size_mb=16" in asan and f"fast_unwind_on_malloc={int(not full_stacks)}" in asan, asan


def test_output_keeps_each_streams_lines_whole(tmp_path):
    """The daemon cuts stdout anywhere; a stderr line that comes between two pieces of a stdout line
    is written after that line, not inside it. Every byte is kept, and each line is emitted once."""
    from asanlab.run.watch import LONG_LINE, OutputCopier

    seen = []
    stream = [(b"aaaa\nbb", None), (None, b"LLVMSymbolizer: error\n"), (b"bb\ncc", None), (None, b"no newline"),
              (b"x" * (LONG_LINE + 10), None)]
    copier = OutputCopier(iter(stream), tmp_path / "output.log", lambda e: seen.append(e.message))
    copier.run()
    log = (tmp_path / "output.log").read_bytes()
    assert log == b"aaaa\nLLVMSymbolizer: error\nbbbb\n" + b"cc" + b"x" * (LONG_LINE + 10) + b"no newline"
    assert seen[:3] == ["aaaa", "LLVMSymbolizer: error", "bbbb"] and seen[-1] == "no newline"
    # Without demux (an older stream of plain chunks) the bytes are kept as they come.
    copier = OutputCopier(iter([b"one\ntw", b"o\n"]), tmp_path / "plain.log", lambda e: None)
    copier.run()
    assert (tmp_path / "plain.log").read_bytes() == b"one\ntwo\n"


def test_the_symbolizers_complaints_stay_in_the_log_and_are_said_once(tmp_path):
    from asanlab.run.watch import OutputCopier

    seen = []
    noise = b"LLVMSymbolizer: error reading file: No such file or directory\n"
    stream = [(b"hello\n", None), (None, noise * 3), (b"bye\n", None)]
    copier = OutputCopier(iter(stream), tmp_path / "output.log", lambda e: seen.append(e.message))
    copier.run()
    assert (tmp_path / "output.log").read_bytes() == b"hello\n" + noise * 3 + b"bye\n"
    assert seen == ["hello", "bye"] and copier.symbolizer_errors == 3


def test_a_companions_control_files_are_written_before_the_run_and_mounted_read_only(state, tmp_path):
    """The soak's trigger: in the session's control folder, which the container sees read-only."""
    from asanlab.run.lifecycle import _volumes

    s = session.create({"command": ["php", "/app/a.php"], "app": str(tmp_path / "a.php")})
    volumes = _volumes(s, tmp_path / "a.php", [], {"agent": "/asanlab/agent"}, controls={"trigger": b"0 0 500 - 0\n"})
    assert volumes[str(s.path / "control")] == {"bind": "/asanlab/control", "mode": "ro"}
    assert volumes[str(s.path / "agent")] == {"bind": "/asanlab/agent", "mode": "rw"}
    assert (s.path / "control" / "trigger").read_bytes() == b"0 0 500 - 0\n"
    plain = session.create({"command": ["php", "/app/a.php"], "app": str(tmp_path / "a.php")})
    assert not any(v["bind"] == "/asanlab/control" for v in _volumes(plain, tmp_path / "a.php", [], {}).values())


def test_the_second_look_for_orphans_stops_containers_and_leaves_sessions_alone(state):
    """At the end of a run, only containers are looked for again (a killed asanlab's create that
    completed late); sessions left running were closed by the first look."""
    import socket

    dead = session.create({"command": ["php", "/app/a.php"], "owner": f"{socket.gethostname()}:{2**22 + 17}:1"})
    client = FakeClient()
    client.containers.list = lambda **kw: []
    assert run.recover_orphans(client, sessions_too=False) == []
    assert session.load(dead.id).data["status"] == "running"
    assert run.recover_orphans(client) == [dead.id]
