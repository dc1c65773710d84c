"""Crashes the agent caught (asanlab/reports/crash.py), read from real crash files: tests/fixtures/crash/
holds what images/agent/crash.c wrote for tests/fixtures/c/crash.c (gcc -g -rdynamic, the agent
preloaded, the program named php-crash so that the agent starts): a SIGSEGV with gdb's view, an
abort() without gdb. The end-to-end test with a Swoole worker is tests/docker/test_tools.py."""

from pathlib import Path

from asanlab.reports import crash, php_stack
from asanlab.reports.findings import Category, group
from asanlab.reports.text import render, title
from asanlab.reports.types import Tool

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "crash"


def test_a_sigsegv_with_gdbs_view():
    [r] = crash.parse((FIXTURES / "segv-gdb.txt").read_text(), "crash.31355")
    assert (r.tool, r.kind, r.address) == (Tool.CRASH, "SEGV", "0x8")
    assert r.message == "SEGV on address 0x8 (signal 11 SIGSEGV)"
    assert r.pid == int(r.thread) and r.complete
    # gdb's frames under the signal's trampoline: the agent's handler and gdb's wait are not the crash.
    assert [f.describe() for f in r.frames] == ["store /tmp/php-crash.c:4", "handler /tmp/php-crash.c:5",
                                                "main /tmp/php-crash.c:6"]
    assert "asanlab-gdb registers" in r.text and "rip            0x" in r.text


def test_an_abort_without_gdb_has_glibcs_frames():
    [r] = crash.parse((FIXTURES / "abort-glibc.txt").read_text(), "crash.31364")
    assert (r.kind, r.address) == ("ABRT", None)  # a raised signal's si_addr is no address
    assert r.message == "ABRT raised (abort() or a kill) (signal 6 SIGABRT)"
    assert [f.function for f in r.frames[:4]] == [None, "gsignal", "abort", "main"]
    assert r.frames[0].describe() == "?? /lib/x86_64-linux-gnu/libc.so.6+0x8aeec"
    assert r.frames[3].describe() == "main ./php-crash"  # a symbol's offset is not the module's


def test_a_crash_is_an_error_finding_with_its_php_stack(tmp_path):
    (tmp_path / "crash.31355").write_text((FIXTURES / "segv-gdb.txt").read_text())
    (tmp_path / "php-backtrace.31355").write_text(
        "report crash 31355\nframe crash\t/app/server.php\t23\nframe {closure}\t/app/server.php\t11\n"
        "coroutine 3\nrequest GET /crash\nend\n")
    reports = crash.read_folder(tmp_path, php_stack.read_folder(tmp_path))
    [r] = reports
    assert r.php.path() == "crash() /app/server.php:23 <- {closure}() /app/server.php:11"
    assert (r.php.request, r.php.coroutine) == ("GET /crash", 3)
    [f] = group(reports)
    assert f.category is Category.ERROR and f.tool is Tool.CRASH
    assert title(f) == "CRASH SEGV on address 0x8 (signal 11 SIGSEGV)"
    shown = render(None, [f])
    assert "CRASH SEGV on address 0x8" in shown and "crash() /app/server.php:23" in shown and "GET /crash" in shown


def test_a_crash_file_cut_short_keeps_what_it_has():
    text = (FIXTURES / "segv-gdb.txt").read_text()
    cut = text[:text.index("asanlab-gdb bt")]  # gdb was killed before its backtrace
    [r] = crash.parse(cut, "crash.1")
    assert not r.complete
    assert [f.function for f in r.frames] == ["store", "handler", "main", None, "__libc_start_main", "_start"]


def test_gdb_frames_with_cpp_names_and_libraries():
    lines = ["#0  0x00007f in swoole::PHPCoroutine::main_func (arg=0x7f) at /usr/src/ext-swoole/ext-src/swoole_coroutine.cc:1012",
             "#1  0x00007f in std::_Function_handler<void (void*), swoole::Coroutine::Coroutine(void (*)(void*), void*)::{lambda(void*)#1}>::_M_invoke(std::_Any_data const&, void*&&) (__functor=..., __args#0=@0x7f: 0x0) at /usr/include/c++/12/bits/std_function.h:290",
             "#2  0x00007f in ?? () from /lib/x86_64-linux-gnu/libffi.so.8",
             "        locals = 1",
             "#3  zend_ffi_write (ptr=0x8) at /usr/src/php-src/ext/ffi/ffi.c:772"]
    frames = crash.gdb_frames(lines)
    assert [f.describe() for f in frames] == [
        "swoole::PHPCoroutine::main_func /usr/src/ext-swoole/ext-src/swoole_coroutine.cc:1012",
        "std::_Function_handler<void (void*), swoole::Coroutine::Coroutine(void (*)(void*), void*)::{lambda(void*)#1}>"
        "::_M_invoke(std::_Any_data const&, void*&&) /usr/include/c++/12/bits/std_function.h:290",
        "?? /lib/x86_64-linux-gnu/libffi.so.8",
        "zend_ffi_write /usr/src/php-src/ext/ffi/ffi.c:772"]


def test_zbacktrace_gives_the_php_frames_when_the_agents_block_is_missing():
    stack = crash.zbacktrace(["[0x7f0c2a814020] crash() /app/server.php:23",
                              "[0x7f0c2a813f80] {closure}(object[0x7f0c2a813fd0], object[0x7f0c2a814000]) /app/server.php:11",
                              "not a frame"])
    assert stack.path() == "crash() /app/server.php:23 <- {closure}() /app/server.php:11"


def test_a_crash_in_sarif_points_at_the_php_line_and_in_junit(tmp_path):
    import json
    import xml.etree.ElementTree as ET

    import jsonschema

    from asanlab.reports import export

    (tmp_path / "crash.1").write_text((FIXTURES / "segv-gdb.txt").read_text())
    (tmp_path / "crash.2").write_text((FIXTURES / "abort-glibc.txt").read_text())
    pid = (FIXTURES / "segv-gdb.txt").read_text().split()[1]
    (tmp_path / f"php-backtrace.{pid}").write_text(
        f"report crash {pid}\nframe crash\t/app/server.php\t23\nrequest GET /crash\nend\n")
    findings = group(crash.read_folder(tmp_path, php_stack.read_folder(tmp_path)))
    assert sorted(f.kind for f in findings) == ["ABRT", "SEGV"]
    schema = json.loads((FIXTURES.parent / "sarif" / "sarif-schema-2.1.0.json").read_text())
    doc = json.loads(export.to_sarif(findings, app_entry="server.php"))
    jsonschema.Draft4Validator(schema).validate(doc)
    by_rule = {r["ruleId"]: r for r in doc["runs"][0]["results"]}
    segv = by_rule["SEGV"]["locations"][0]["physicalLocation"]
    assert segv["artifactLocation"]["uri"] == "server.php" and segv["region"]["startLine"] == 23
    cases = ET.fromstring(export.to_junit(findings)).iter("testcase")
    assert len([c for c in cases if c.find("failure") is not None]) == 2


def test_the_text_says_when_the_apps_main_process_died_by_a_signal():
    session = {"id": "s1", "command": ["php", "/app/a.php"], "image": {"ref": "x"}, "status": "finished",
               "stop_reason": "exited", "exit_code": 139}
    assert "the app's main process died by signal 11 (SIGSEGV) before anything stopped it" in render(session, [])
    for quiet in ({**session, "exit_code": 0}, {**session, "exit_code": 255}, {**session, "stop_reason": "interrupted",
                                                                                "exit_code": 137}):
        assert "died by" not in render(quiet, [])


def test_a_swoole_worker_crash_from_the_debug_image():
    """Captured by tests/docker/test_tools.py: a worker of a Swoole 6.1.9 HTTP server (process mode,
    coroutines on) writing to address 8 through FFI in its request handler, in asanlab's debug image
    with gdb."""
    [r] = crash.parse((FIXTURES / "swoole-worker-segv.txt").read_text(), "crash.8")
    assert (r.kind, r.address, r.pid) == ("SEGV", "0x8", 8)
    assert [f.function for f in r.frames[:3]] == ["zend_ffi_zval_to_cdata", "zend_ffi_cdata_write_dim",
                                                  "zend_assign_to_object_dim"]
    assert r.frames[0].file.endswith("ext/ffi/ffi.c") and r.frames[0].line
    # Swoole's coroutine stacks are registered with Valgrind's headers in this image: gdb unwinds
    # down to the coroutine's entry.
    assert any(f.function == "swoole::coroutine::Context::context_func" for f in r.frames)
    # zbacktrace's view, kept for when the agent could not write its block; the agent's block wins.
    assert r.php.path() == "crash() /app/server.php:23 <- {closure}() /app/server.php:13"
    stacks = php_stack.parse((FIXTURES / "swoole-worker-segv.php-backtrace").read_text())
    assert stacks["crash 8"].request == "GET /crash" and stacks["crash 8"].coroutine == 3
    assert "coroutine cid: [3]" in r.text  # Swoole's co_bt


ABNORMAL = ("[2026-11-26 10:00:00 $1.0]\tWARNING\tServer::check_worker_exit_status(): "
            "worker(pid=8, id=1) abnormal exit, status=0, signal=11")


def test_abnormal_exit_line():
    assert crash.abnormal_exit(ABNORMAL) == {"line": ABNORMAL.strip(), "pid": 8, "status": 0, "signal": 11}
    assert crash.abnormal_exit("worker(pid=8, id=1) exit normally") is None


def test_a_worker_that_died_by_a_signal_and_left_no_report_is_a_crash(state):
    """An image asanlab did not build has no crash handler: the manager's line is the evidence, and
    a finding (a CI gate fails on it). A worker that left its own report, a normal exit, an exit by
    ASan (status 1, no signal) and a kill are not crashes of their own."""
    from asanlab import session
    from asanlab.run.session_end import close_session

    s = session.create({"command": ["php", "/app/server.php"], "app": "/tmp/server.php"})
    lines = [ABNORMAL,
             ABNORMAL.replace("pid=8", "pid=9").replace("status=0, signal=11", "status=1, signal=0"),
             ABNORMAL.replace("pid=8", "pid=10").replace("signal=11", "signal=9"),
             ABNORMAL.replace("pid=8", "pid=12"),  # left crash.12 below: one finding, with its stack
             "task_worker(pid=13, id=3) abnormal exit, status=0, signal=6"]
    s.output_log.parent.mkdir(parents=True, exist_ok=True)
    s.output_log.write_text("\n".join(lines) + "\n")
    (s.path / session.PHP_STACK_SUBDIR).mkdir(parents=True, exist_ok=True)
    (s.path / session.PHP_STACK_SUBDIR / "crash.12").write_text(
        (FIXTURES / "swoole-worker-segv.txt").read_text().replace("crash 8", "crash 12"))
    exits = crash.abnormal_exits_in(s.output_log)
    assert [e["pid"] for e in exits] == [8, 9, 10, 12, 13]
    findings = close_session(s, status="finished", stop_reason="interrupted", exit_code=0, error=None, abnormal=exits)
    crashes = sorted((f.example.pid, f.kind, f.signature) for f in findings if f.tool is Tool.CRASH)
    assert [(pid, kind) for pid, kind, _ in crashes] == [(8, "SEGV"), (12, "SEGV"), (13, "ABRT")], crashes
    assert all(f.category is Category.ERROR for f in findings)
    [bare] = [f for f in findings if f.example.pid == 8]
    assert bare.example.message == "SEGV (signal 11 SIGSEGV) in a Swoole worker that left no stack"
    shown = render(s.data, findings)
    assert "CRASH SEGV (signal 11 SIGSEGV) in a Swoole worker that left no stack" in shown
    assert "CRASH ABRT (signal 6 SIGABRT) in a Swoole task worker that left no stack" in shown
    assert shown.count("no C or PHP stack: nothing in the process caught the signal") == 2, shown
    # Read again later (replay) from the session alone: the same.
    again = session.reports_and_findings(session.load(s.id))[1]
    assert sorted(f.signature for f in again) == sorted(f.signature for f in findings)


def test_a_main_process_that_died_by_a_signal_and_left_no_report_is_a_crash(state):
    """A PHP script segfaulting in an image without the agent: Docker's exit code 139 is the
    evidence. Stopped by asanlab (137 after the grace), or a report of its own: no extra finding."""
    from asanlab import session
    from asanlab.run.session_end import close_session

    s = session.create({"command": ["php", "/app/a.php"], "app": "/tmp/a.php"})
    s.output_log.parent.mkdir(parents=True, exist_ok=True)
    s.output_log.write_text("Segmentation fault\n")
    findings = close_session(s, status="finished", stop_reason="exited", exit_code=139, error=None, abnormal=[])
    [f] = findings
    assert (f.tool, f.kind, f.category, f.example.pid) == (Tool.CRASH, "SEGV", Category.ERROR, 1)
    assert "CRASH SEGV (signal 11 SIGSEGV) in the app's main process, which left no stack" in render(s.data, findings)
    for stop_reason, code in (("interrupted", 137), ("exited", 0), ("exited", 255), ("timeout", 143)):
        s = session.create({"command": ["php", "/app/a.php"], "app": "/tmp/a.php"})
        s.output_log.parent.mkdir(parents=True, exist_ok=True)
        s.output_log.write_text("")
        assert close_session(s, status="finished", stop_reason=stop_reason, exit_code=code, error=None,
                             abnormal=[]) == []
    # The agent's own report of pid 1 is the finding; the exit code adds nothing.
    s = session.create({"command": ["php", "/app/a.php"], "app": "/tmp/a.php"})
    (s.path / session.PHP_STACK_SUBDIR).mkdir(parents=True, exist_ok=True)
    (s.path / session.PHP_STACK_SUBDIR / "crash.1").write_text(
        (FIXTURES / "swoole-worker-segv.txt").read_text().replace("crash 8", "crash 1"))
    s.output_log.write_text("")
    [f] = close_session(s, status="finished", stop_reason="exited", exit_code=139, error=None, abnormal=[])
    assert f.example.address == "0x8"
