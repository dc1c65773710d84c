"""What the app's container wrote, and the bundles, sessions and logs a user was handed, are
untrusted: links are not followed, non-regular files are not read, sizes are bounded, and a bad
document is one sentence (asanlab's own error), never a traceback, a hang or a host file."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from asanlab import bundle, session, untrusted
from asanlab.errors import AsanlabError, SessionError, UsageError
from asanlab.reports import symbolize, valgrind
from asanlab.reproduce import source
from asanlab.run import traffic
from asanlab.run.watch import Watcher
from asanlab.soak import driver

SECRET = b"host secret: this must never leave the host\n"


@pytest.fixture
def canary(tmp_path):
    """A host file outside any session, and its checksum."""
    p = tmp_path / "host" / "canary.txt"
    p.parent.mkdir()
    p.write_bytes(SECRET)
    return p


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def no_hang(fn, seconds=10):
    """Runs fn in a thread; fails (instead of hanging the suite) if it has not returned in time."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # returned to the test
            box["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} still running after {seconds} s (blocked on a FIFO?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- the module's rules ---------------------------------------------------------------------------

def test_a_link_a_fifo_a_device_and_a_large_file_are_refused_by_name(tmp_path, canary):
    (tmp_path / "link").symlink_to(canary)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 2000)
    with pytest.raises(untrusted.UntrustedFileError, match="link.*symbolic link"):
        untrusted.read_bytes(tmp_path / "link")
    with pytest.raises(untrusted.UntrustedFileError, match="fifo is not a regular file \\(a FIFO\\)"):
        no_hang(lambda: untrusted.read_bytes(tmp_path / "fifo"))
    with pytest.raises(untrusted.UntrustedFileError, match="symbolic link"):
        untrusted.read_bytes(tmp_path / "zero")
    with pytest.raises(untrusted.UntrustedFileError, match="2,000 bytes, more than the 1,000"):
        untrusted.read_bytes(tmp_path / "big", limit=1000)
    with pytest.raises(FileNotFoundError):
        untrusted.read_bytes(tmp_path / "absent")
    assert untrusted.read_bytes(tmp_path / "big", limit=2000) == b"x" * 2000


def test_a_linked_folder_on_the_way_is_refused_under_a_trusted_root(tmp_path, canary):
    root = tmp_path / "session"
    root.mkdir()
    (root / "raw").symlink_to(canary.parent)
    with pytest.raises(untrusted.UntrustedFileError, match="link or not a folder"):
        untrusted.read_bytes(root / "raw" / "canary.txt", under=root)
    with pytest.raises(untrusted.UntrustedFileError, match="leaves"):
        untrusted.read_bytes(root / ".." / "host" / "canary.txt", under=root)


def test_listing_and_walking_leave_links_and_special_files_out(tmp_path, canary):
    folder = tmp_path / "logs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sanitizer.1").write_text("a\n")
    (folder / "sub" / "sanitizer.2").write_text("b\n")
    (folder / "sanitizer.3").symlink_to(canary)
    (folder / "linked-dir").symlink_to(canary.parent)
    os.mkfifo(folder / "sanitizer.4")
    assert [p.name for p in untrusted.files(folder)] == ["sanitizer.1"]
    assert [str(p.relative_to(folder)) for p in untrusted.walk(folder)] == ["sanitizer.1", "sub/sanitizer.2"]
    left_out: list = []
    assert dict(untrusted.tree(folder, limit=100, left_out=left_out)) == {"sanitizer.1": b"a\n", "sub/sanitizer.2": b"b\n"}
    assert left_out == [("linked-dir", "a link"), ("sanitizer.3", "a link"), ("sanitizer.4", "a FIFO")]
    left_out = []
    assert dict(untrusted.tree(folder, limit=3, left_out=left_out)) == {"sanitizer.1": b"a\n"}
    assert ("sub/sanitizer.2", "2 bytes, past the 3 taken in all") in left_out


def test_an_atomic_write_replaces_a_planted_link_instead_of_writing_through_it(tmp_path, canary):
    before = digest(canary)
    (tmp_path / "trigger").symlink_to(canary)
    untrusted.atomic_write(tmp_path / "trigger", b"1 0 0\n")
    assert digest(canary) == before
    assert not (tmp_path / "trigger").is_symlink() and (tmp_path / "trigger").read_bytes() == b"1 0 0\n"


# -- issue items, each as the app or a sender would try it ---------------------------------------

class _Ctx:
    def __init__(self, s):
        self.session, self.stop, self.reporter = s, threading.Event(), lambda e: None


def test_the_soaks_trigger_is_written_in_asanlabs_own_folder_and_never_through_a_link(state, canary):
    """1: the app links trigger and trigger.tmp (the old names) in its agent folder to a host file:
    asanlab writes neither (its trigger is in the session's control folder, read-only in the
    container), and does not write through a link even there."""
    s = session.create({"command": ["php"]})
    agent = s.path / "agent"
    agent.mkdir()
    for name in ("trigger.tmp", "trigger"):
        (agent / name).symlink_to(canary)
    (agent / "answers.7").symlink_to(canary)  # an answer file the app linked to a host file: not read
    control = s.path / session.CONTROL_SUBDIR
    control.mkdir()
    (control / "trigger").write_bytes(driver.trigger_record(0, False, 500, []))
    d = driver.Driver.__new__(driver.Driver)
    d.seq, d.opts, d.agentless_said = 3, driver.SoakOptions(requests=[], checkpoints=[1]), set()
    answers, agentless = d._ask(_Ctx(s), {7}, [])
    assert answers == {} and agentless == {7} and digest(canary) == hashlib.sha256(SECRET).hexdigest()
    written = (control / "trigger").read_bytes()
    assert written.startswith(b"3 0 500 - 3\n") and len(written) == driver.TRIGGER_SIZE
    assert (agent / "trigger").is_symlink() and (agent / "trigger.tmp").is_symlink()  # the app's, untouched
    assert driver._agent_text(s, "answers.7") == ""
    (control / "trigger").unlink()
    (control / "trigger").symlink_to(canary)
    with pytest.raises(OSError):
        d._ask(_Ctx(s), set(), [])
    assert digest(canary) == hashlib.sha256(SECRET).hexdigest()


def test_a_bundle_takes_no_host_file_through_a_link_in_raw_and_no_member_leaves_its_folder(state, tmp_path, canary):
    """2 and 5: links, a linked folder and a FIFO in raw/ (written by the app); an id with ../."""
    s = session.create({"command": ["php"]})
    (s.path / "raw" / "sanitizer" / "sanitizer.9").write_text("==9==ERROR: AddressSanitizer: x\n")
    (s.path / "raw" / "sanitizer" / "leak").symlink_to(canary)
    (s.path / "raw" / "sanitizer" / "etc").symlink_to(canary.parent)
    os.link(s.path / "raw" / "sanitizer" / "sanitizer.9", s.path / "raw" / "sanitizer" / "hard")  # same mount: harmless
    os.mkfifo(s.path / "raw" / "sanitizer" / "pipe")
    s.data["id"] = "../../../../tmp/evil"
    out = tmp_path / "report.tar.gz"
    names = no_hang(lambda: bundle.write(s, out, "report", "{}"))
    assert "raw/sanitizer/sanitizer.9" in names and not any("leak" in n or "etc" in n or "pipe" in n for n in names[:-1])
    assert names[-1] == "left-out.txt"
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        assert all(m.name.startswith("asanlab-session/") and ".." not in m.name for m in members)
        assert not any(SECRET in tar.extractfile(m).read() for m in members if m.isfile())
        note = tar.extractfile("asanlab-session/left-out.txt").read().decode()
    assert "raw/sanitizer/leak: a link\n" in note and "raw/sanitizer/pipe: a FIFO\n" in note


def test_a_bundles_app_and_recording_stay_inside_the_bundle(tmp_path):
    """4: a name with ../, an absolute name, a path the bundle does not hold."""
    folder = tmp_path / "b"
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "server.php").write_text("<?php\n")
    (folder / "recording.jsonl").write_text('{"c": 1, "t": 0, "open": "x"}\n{"c": 1, "t": 0, "in": "R0VUIC8gSFRUUC8xLjENCg0K"}\n')

    def bundle_with(**fields):
        meta = {"format": source.BUNDLE_FORMAT, "recording": "recording.jsonl",
                "app": {"name": "server.php", "copied": True, "path": "/srv/server.php"}, **fields}
        (folder / "bundle.json").write_text(json.dumps(meta))
        return source.load(str(folder))

    assert bundle_with().app == folder / "app" / "server.php"
    for name in ("../../../etc/passwd", "/etc/passwd", "..", "a/b.php"):
        with pytest.raises(UsageError, match="not a plain file name"):
            bundle_with(app={"name": name, "copied": True})
    with pytest.raises(UsageError, match="does not hold its app.*'/etc/server.php'") as e:
        bundle_with(app={"name": "server.php", "copied": False, "path": "/etc/server.php"})
    assert "--app" in e.value.hint
    with pytest.raises(UsageError, match="field 'recording' must be a file name inside the bundle"):
        bundle_with(recording="../../session/traffic/traffic.jsonl")
    (folder / "app" / "server.php").unlink()
    (folder / "app" / "server.php").symlink_to("/etc/hostname")
    with pytest.raises(UsageError, match="not a regular file in the bundle"):
        bundle_with()


@pytest.mark.parametrize("fields, says", [
    ({"args": "rm -rf /"}, "'args' must be a list of strings"),
    ({"env": {"A B": "x"}}, "not a variable name"),
    ({"env": {"A": 1}}, "'env' must be an object of strings"),
    ({"port": "9501; true"}, "'port' must be like"),
    ({"image": {"id": 5}}, "'image' must be an object"),
    ({"findings": [{"signature": 1}]}, "'findings' must be a list"),
    ({"stacks": "slow"}, "'stacks'"),
    ({"recipe": "x"}, "'recipe' must be an object"),
])
def test_a_bundle_field_of_the_wrong_type_is_one_sentence(tmp_path, fields, says):
    """6: hand-edited bundle.json fields."""
    folder = tmp_path / "b"
    folder.mkdir()
    meta = {"format": source.BUNDLE_FORMAT, "recording": "r.jsonl", "app": {"name": "a.php", "copied": True}, **fields}
    (folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match=says):
        source.load(str(folder))


def test_a_session_file_that_is_a_fifo_or_a_device_link_is_refused_at_once(state):
    """7: session.json as a FIFO or a link to /dev/zero; raw/output.log as a FIFO."""
    s = session.create({"command": ["php"]})
    (s.path / "session.json").unlink()
    os.mkfifo(s.path / "session.json")
    with pytest.raises(SessionError, match="not a regular file"):
        no_hang(lambda: session.load(s.id))
    (s.path / "session.json").unlink()
    (s.path / "session.json").symlink_to("/dev/zero")
    with pytest.raises(SessionError, match="symbolic link"):
        no_hang(lambda: session.load(str(s.path)))
    assert session.list_ids() == []  # a linked session.json is not a session
    t = session.create({"command": ["php"]})
    os.mkfifo(t.output_log)
    with pytest.raises(UsageError, match="output.log is not a regular file"):
        no_hang(lambda: session.reports_and_findings(t))


@pytest.mark.parametrize("data, says", [
    ({"id": "../../x"}, "is not a plain name"),
    ({"id": 5}, "'id' must be a string"),
    ({"exit_code": "0; rm"}, "'exit_code' must be a number or null"),
    ({"image": "abc"}, "'image' must be an object or null"),
    ({"abnormal_exits": {}}, "'abnormal_exits' must be a list or null"),
])
def test_a_session_json_of_the_wrong_shape_is_one_sentence(state, data, says):
    s = session.create({"command": ["php"]})
    (s.path / "session.json").write_text(json.dumps({**s.data, **data}))
    with pytest.raises(SessionError, match=says):
        session.load(str(s.path))


def test_an_offset_from_a_log_never_reaches_the_symbolizers_shell_line():
    """8: an <ip> of a Valgrind XML from elsewhere, with shell in it."""
    xml = ("<?xml version=\"1.0\"?><valgrindoutput><pid>7</pid><error><kind>InvalidRead</kind><what>x</what>"
           "<stack><frame><ip>0x1; touch /tmp/pwned</ip><obj>/opt/php/bin/php</obj></frame>"
           "<frame><ip>0x10</ip><obj>/opt/php/bin/php</obj></frame></stack></error></valgrindoutput>")
    reports = valgrind.parse_xml(xml, "vg.xml")
    wanted = symbolize.wanted(reports)
    assert wanted == {"/opt/php/bin/php": {"0x10"}}
    assert "touch" not in symbolize.script(wanted) and "touch" not in symbolize.script({"/x": {"0x1;touch /y"}})


@pytest.mark.parametrize("xml", [
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><valgrindoutput>&b;</valgrindoutput>',
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><valgrindoutput>&x;</valgrindoutput>',
])
def test_a_valgrind_xml_with_entities_is_refused_with_its_name(tmp_path, xml):
    """10: a billion-laughs file and an external entity read as "0 findings" before."""
    f = tmp_path / "memcheck.xml"
    f.write_text(xml)
    with pytest.raises(UsageError, match="memcheck.xml: refused: it declares a DTD or entities"):
        list(session.read_file(f, str(f)))


def test_a_large_valgrind_xml_is_streamed(tmp_path):
    """15: the errors are read one at a time from the file, not from a string of it."""
    error = ("<error><kind>Leak_DefinitelyLost</kind><xwhat><text>x</text><leakedbytes>8</leakedbytes>"
             "<leakedblocks>1</leakedblocks></xwhat><stack><frame><ip>0x1</ip><fn>malloc</fn></frame></stack></error>")
    f = tmp_path / "big.xml"
    with open(f, "w") as fh:
        fh.write('<?xml version="1.0"?>\n<valgrindoutput><pid>3</pid>')
        for _ in range(20000):
            fh.write(error)
        fh.write("</valgrindoutput>")
    reports = session.read_file(f, "big.xml")
    assert not isinstance(reports, list)  # a generator: the caller groups as they come
    first = next(reports)
    assert (first.kind, first.pid, first.leaked_bytes) == ("direct-leak", 3, 8)
    assert sum(1 for _ in reports) == 19999


def test_corrupt_recording_lines_are_skipped_not_a_traceback(tmp_path):
    """6: hand-edited recording lines of every wrong shape."""
    good = base64.b64encode(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").decode()
    lines = ['{"c": 1, "t": 0, "open": "x"}', f'{{"c": 1, "t": 0.1, "in": "{good}"}}', "[1]", '"c"', "5",
             '{"c": 1e400, "t": 0}', '{"c": 1, "t": 1e400, "in": "x"}', '{"c": 1, "t": 0, "in": 5}',
             '{"c": true, "t": 0, "in": ""}', '{"c": 1, "t": "NaN", "out": ""}', '{"c": 2, "t": null, "in": ""}',
             "\xff\xfe not utf-8", "{" * 5000]
    f = tmp_path / "traffic.jsonl"
    f.write_text("\n".join(lines) + "\n", errors="surrogateescape")
    [conn] = traffic.read(f)
    assert [r.target for r in traffic.requests_of(conn)] == ["/"]


def test_a_fifo_or_a_link_in_the_log_folder_does_not_stop_the_live_watcher(tmp_path, canary):
    """3, 14: the watcher thread reads only regular files, a bounded piece at a time."""
    folder = tmp_path / "sanitizer"
    folder.mkdir()
    os.mkfifo(folder / "sanitizer.1")
    (folder / "sanitizer.2").symlink_to(canary)
    (folder / "sanitizer.3").write_text("==3==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n"
                                        "    #0 0x1 in zif_x /a.c:1\n\n")
    events = []
    w = Watcher(folder, events.append)
    no_hang(w.scan)
    assert set(w.state) == {"sanitizer.3"}


# -- property tests: generated documents give asanlab's own error or a result, never another
#    exception, never a path outside the bundle --------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children,
                                                                                       max_size=4), max_leaves=12)
NAMES = st.sampled_from(["a.php", "../a.php", "/etc/passwd", "", ".", "..", "app/a.php", "a\x00.php", "r.jsonl",
                         "../../r.jsonl", "/dev/zero"])
BUNDLE_FIELDS = st.fixed_dictionaries({
    "format": st.sampled_from([source.BUNDLE_FORMAT, "x"]),
}, optional={
    "app": st.one_of(JSON, st.fixed_dictionaries({"name": st.one_of(NAMES, JSON)},
                                                 optional={"copied": st.one_of(st.booleans(), JSON),
                                                           "path": st.one_of(NAMES, JSON)})),
    "recording": st.one_of(NAMES, JSON), "args": JSON, "env": JSON, "port": st.one_of(st.text(max_size=12), JSON),
    "image": JSON, "recipe": JSON, "findings": JSON, "stacks": JSON, "replay": JSON, "valgrind": JSON,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=BUNDLE_FIELDS)
def test_any_bundle_json_gives_asanlabs_error_or_a_source_inside_the_bundle(tmp_path, meta):
    folder = tmp_path / "b"
    (folder / "app").mkdir(parents=True, exist_ok=True)
    (folder / "app" / "a.php").write_text("<?php\n")
    (folder / "r.jsonl").write_text('{"c": 1, "t": 0, "in": "R0VUIC8gSFRUUC8xLjENCg0K"}\n')
    (folder / "bundle.json").write_text(json.dumps(meta))
    try:
        src = source.load(str(folder))
    except AsanlabError:
        return
    assert src.app.resolve().is_relative_to(folder.resolve())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(st.sampled_from(sorted(session.FIELD_TYPES) + ["schema", "x"]), JSON, max_size=8))
def test_any_session_json_gives_asanlabs_error_or_a_session(state, data):
    folder = state / "sessions-any" / "s"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "session.json").write_text(json.dumps(data))
    try:
        s = session.load(str(folder))
    except SessionError:
        return
    # What `sessions` and `replay` read of it works on what load let through.
    session.stacks_of(s.data)
    try:
        session.reports_and_findings(s)
    except AsanlabError:
        pass
    bundle.write(s, state / "out.tar.gz", "", "{}")
    with tarfile.open(state / "out.tar.gz") as tar:
        assert all(".." not in m.name and not m.name.startswith("/") for m in tar.getmembers())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(JSON.map(json.dumps), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))),
                      max_size=12))
def test_any_recording_gives_connections(tmp_path, lines):
    f = tmp_path / "r.jsonl"
    f.write_text("\n".join(lines) + "\n")
    for conn in traffic.read(f):
        traffic.requests_of(conn)


# -- 10: control characters ----------------------------------------------------------------------

HOSTILE_LINE = "ok\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m\x00\r[bold]x[/]"


def test_the_apps_control_characters_never_reach_the_terminal():
    from asanlab.console import ConsoleReporter, SafeConsole
    from asanlab.events import Event

    buf = io.StringIO()
    console = SafeConsole(file=buf, force_terminal=False, highlight=False, soft_wrap=True)
    reporter = ConsoleReporter(console)
    for kind in ("run.output", "run.finding", "run.warning", "other"):
        reporter(Event(kind, HOSTILE_LINE))
    console.print(HOSTILE_LINE, markup=False)
    text = buf.getvalue()
    assert not any(c in text for c in "\x1b\x07\x00\r\x9b"), repr(text)
    assert text.count("ok\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x9b1m\\x00\\x0d[bold]x[/]") == 5


def test_a_junit_report_with_the_apps_control_characters_is_valid_xml():
    import xml.etree.ElementTree as ET

    from asanlab.reports.export import to_junit
    from asanlab.reports.findings import group
    from asanlab.reports.sanitizers import parse

    report = ("==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010\n"
              f"READ of size 1 at 0x602000000010 thread T0 {HOSTILE_LINE}\n"
              "    #0 0x55 in zif_\x1bevil /src/a\x00.c:1\n\n")
    findings = group(parse(report, "sanitizer.7"))
    xml = to_junit(findings)
    root = ET.fromstring(xml)  # raised "not well-formed (invalid token)" before
    failure = root.find("testsuite/testcase/failure")
    assert "\\x1b]0;owned" in failure.text and "\x1b" not in xml


def test_a_daemon_timeout_anywhere_in_a_command_is_exit_3_not_a_bug(state, monkeypatch, capsys):
    """21: a requests exception from the Docker SDK (a wait or reload timing out) reached the top as
    "a bug in asanlab", exit 70."""
    import sys

    import requests

    from asanlab.cli.entry import main

    def timed_out():
        raise requests.exceptions.ReadTimeout("UnixHTTPConnectionPool(host='localhost'): Read timed out.")

    monkeypatch.setattr(session, "list_ids", timed_out)
    monkeypatch.setattr(sys, "argv", ["asanlab", "sessions"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 3
    assert "asanlab: error: docker: UnixHTTPConnectionPool" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["run", "APP", "--image", "x", "-p", "99999:1"], "-p 99999:1: port 99999 is out of range"),
    (["run", "APP", "--image", "x", "-e", "NOVALUE"], "-e NOVALUE: expected KEY=VALUE"),
    (["run", "missing.php", "--image", "x"], "missing.php: no such PHP file"),
    (["run", "APP", "--recipe", "RECIPE", "-p", "nope"], "-p nope: expected"),
    (["soak", "APP", "--image", "x", "--url", "http://127.0.0.1:9501/", "-p", "1.2.3:80:80"], "is not an IP address"),
])
def test_usage_errors_come_first_whether_docker_is_up_or_not(state, tmp_path, monkeypatch, capsys, argv, says):
    """16: they came after sources were downloaded or a container started, and as exit 3 when Docker
    was down (these unit tests have no daemon: DOCKER_HOST points nowhere)."""
    import sys

    from asanlab.cli.entry import main

    app = tmp_path / "app.php"
    app.write_text("<?php\n")
    recipe_file = tmp_path / "r.yml"
    recipe_file.write_text('name: x\nphp:\n  version: "8.2.1"\n  source: {url: "http://127.0.0.1:9/php.tar.xz"}\n')
    monkeypatch.chdir(tmp_path)
    argv = [str(app) if a == "APP" else str(recipe_file) if a == "RECIPE" else a for a in argv]
    monkeypatch.setattr(sys, "argv", ["asanlab", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    said = capsys.readouterr().err
    assert e.value.code == 2 and says in said, said
    assert not (state / "cache").exists() and not (state / "state" / "sessions").exists()


# -- 11: what a client sends is recorded and read, whatever it is --------------------------------

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCHED = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
HELLO = b"\x81\x85abcd" + bytes(x ^ y for x, y in zip(b"hello", b"abcda"))


def _recorded(tmp_path, sent: list[bytes], answered: list[bytes], name: str = "traffic.jsonl") -> Path:
    lines = [{"c": 1, "t": 0, "open": "x"}] + [{"c": 1, "t": 0.1, "in": base64.b64encode(b).decode()} for b in sent] \
        + [{"c": 1, "t": 0.2, "out": base64.b64encode(b).decode()} for b in answered]
    f = tmp_path / name
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return f


def _read_all(f: Path):
    conns = traffic.read(f)
    return [r.line for r in traffic.all_requests(conns)], [len(c.messages) for c in conns], traffic.all_units(conns)


def test_a_non_ascii_header_and_a_handshake_without_its_version_are_read_not_fatal(tmp_path):
    """These ended `run --record` with exit 70, the leak it had found never printed."""
    upgrade = UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: websock\xe9t")
    lines, messages, _ = _read_all(_recorded(tmp_path, [upgrade, HELLO], [SWITCHED]))
    assert lines == ["GET /ws"] and messages == [0]
    no_version = UPGRADE.replace(b"Sec-WebSocket-Version: 13\r\n", b"")
    lines, messages, _ = _read_all(_recorded(tmp_path, [no_version, HELLO], [SWITCHED]))
    assert lines == ["GET /ws"] and messages == [0]
    lines, messages, _ = _read_all(_recorded(tmp_path, [UPGRADE, HELLO], [SWITCHED]))
    assert messages == [1]  # the well-formed one is still read as a message


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_bytes_a_client_or_the_app_sends_are_read(tmp_path, data):
    parts = [bytearray(UPGRADE), bytearray(HELLO), bytearray(SWITCHED)]
    for _ in range(data.draw(st.integers(1, 4))):
        part = parts[data.draw(st.integers(0, 2))]
        part[data.draw(st.integers(0, len(part) - 1))] = data.draw(st.integers(0, 255))
    _read_all(_recorded(tmp_path, [bytes(parts[0]), bytes(parts[1])], [bytes(parts[2])]))


def test_a_huge_sparse_file_or_a_link_in_the_log_folder_is_skipped_said_once_and_the_leak_kept(state, canary):
    """The app's planted files cannot hide the findings: the real log is read, the rest is named."""
    s = session.create({"command": ["php"]})
    logs = s.sanitizer_dir
    (logs / "sanitizer.5").write_text(
        "=================================================================\n"
        "==5==ERROR: LeakSanitizer: detected memory leaks\n\n"
        "Direct leak of 123 byte(s) in 1 object(s) allocated from:\n"
        "    #0 0x4a in malloc (/opt/php/bin/php+0x4a)\n    #1 0x4b in zif_leak /src/a.c:3\n\n"
        "SUMMARY: AddressSanitizer: 123 byte(s) leaked in 1 allocation(s).\n")
    with open(logs / "sanitizer.6", "wb") as f:
        f.truncate(session.LOG_LIMIT + 1)  # sparse: takes no disk
    (logs / "sanitizer.7").symlink_to(canary)
    os.mkfifo(logs / "sanitizer.8")
    reports, findings = no_hang(lambda: session.reports_and_findings(s))
    assert [(f.kind, f.example.leaked_bytes) for f in findings] == [("direct-leak", 123)]
    [notice] = [n for n in session.session_notices(s) if n.kind == "not-read"]
    assert "sanitizer.6: not read" in notice.message and "more than" in notice.message


# -- 12, 13: a full or read-only disk under the session ---------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB tmpfs (the suite runs as root in CI; where mounting is not allowed it fails
    under CI=true rather than skipping)."""
    import subprocess

    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_stops_the_app_gracefully_and_the_output_is_still_drained(small_disk):
    from asanlab.run.watch import OutputCopier

    chunks = [(b"line %06d " % i + b"x" * 1000 + b"\n", None) for i in range(200)]  # 200 KiB
    drained = []

    def stream():
        for c in chunks:
            drained.append(c)
            yield c

    events, asked = [], []
    copier = OutputCopier(stream(), small_disk / "output.log", events.append, on_write_error=lambda: asked.append(1))
    no_hang(lambda: copier.run())
    assert len(drained) == 200 and asked == [1]  # read to the end; the stop asked for once
    assert "No space left on device" in copier.write_error
    warnings = [e.message for e in events if e.kind == "run.warning"]
    assert len(warnings) == 1 and "stopping the app gracefully" in warnings[0]
    assert sum(1 for e in events if e.kind == "run.output") == 200  # every line still shown
    kept = (small_disk / "output.log").read_bytes()
    assert kept.startswith(b"line 000000 ") and len(kept) > 30000  # what was written is kept


def test_a_session_that_cannot_be_saved_still_gives_its_findings(small_disk, monkeypatch):
    from asanlab.run.session_end import close_session

    monkeypatch.setenv("ASANLAB_HOME", str(small_disk))  # the sessions live on the small disk
    s = session.create({"command": ["php"]})
    (s.sanitizer_dir / "sanitizer.5").write_text(
        "==5==ERROR: LeakSanitizer: detected memory leaks\n\nDirect leak of 9 byte(s) in 1 object(s) allocated from:\n"
        "    #0 0x4a in malloc (/opt/php/bin/php+0x4a)\n    #1 0x4b in zif_leak /src/a.c:3\n\n")
    with open(small_disk / "fill", "wb") as f:  # the disk fills up
        with pytest.raises(OSError):
            f.write(b"x" * (128 * 1024))
            f.flush()
    findings = close_session(s, status="finished", stop_reason="exited", exit_code=0, error=None, abnormal=[])
    assert [(f.kind, f.example.leaked_bytes) for f in findings] == [("direct-leak", 9)]
    assert "No space left on device" in s.unsaved
    assert json.loads((s.path / "session.json").read_text())["status"] == "running"  # the old one, whole


def test_minimize_prints_its_result_before_saying_the_bundle_could_not_be_written(small_disk, monkeypatch, capsys):
    """13: a read-only session folder at the end of `reproduce --minimize` lost the minutes of
    replays that found the requests (exit 70)."""
    import subprocess
    from types import SimpleNamespace

    from asanlab.cli.common import TextOrJson
    from asanlab.cli.reproducing import _minimize
    from asanlab.errors import InfraError

    monkeypatch.setenv("ASANLAB_HOME", str(small_disk))
    app = small_disk / "app.php"
    app.write_text("<?php\n")
    s = session.create({"command": ["php", "/app/app.php"], "app": str(app)})
    get = lambda p: f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    (s.path / "traffic").mkdir()
    _recorded(s.path / "traffic", [get("/a") + get("/fire") + get("/b")], [], name=traffic.FILE)
    src = source.load(s.id)
    src.expected = [source.Expected("double-free|x", "abc", "memory-error", "double-free")]
    fire = SimpleNamespace(signature="double-free|x")
    target = SimpleNamespace(source=src, reporter=lambda e: None, concurrent=False,
                             replay=lambda conns, info, keep: ([fire] if (1, 1) in keep else [], None))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(InfraError, match="reproducer bundle could not be written .*Read-only file system"):
        _minimize(target, "abc", TextOrJson.text, 1)
    printed = capsys.readouterr().out
    assert "1 of 3 request(s)" in printed and "connection 1 #1: GET /fire" in printed


def test_the_live_watcher_survives_running_out_of_descriptors(tmp_path, monkeypatch):
    """14: under a flood of connections the watcher thread died of EMFILE and live reports stopped
    for the rest of the run."""
    import errno
    import time

    folder = tmp_path / "sanitizer"
    folder.mkdir()
    events = []
    w = Watcher(folder, events.append)
    real, calls = untrusted.files, []

    def flaky(path, **kw):
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(path, **kw)

    monkeypatch.setattr(untrusted, "files", flaky)
    w.start()
    try:
        deadline = time.monotonic() + 20
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        (folder / "sanitizer.3").write_text("==3==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n"
                                            "    #0 0x1 in zif_x /a.c:1\n\n"
                                            "SUMMARY: AddressSanitizer: heap-use-after-free /a.c:1 in zif_x\n")
        while not any(e.kind == "run.finding" for e in events) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        w.stop.set()
        w.join(5)
    assert [e.message for e in events if e.kind == "run.warning"] == \
        [f"the live report watcher could not read {folder}: Too many open files; the reports are read at the end"]
    assert any(e.kind == "run.finding" for e in events), events


def test_a_folder_tree_deeper_than_asanlab_walks_is_left_out_not_a_crash(tmp_path):
    """The app can nest folders as deep as it likes in raw/: each level was a frame and an open
    folder here (RecursionError, or out of descriptors, in the bug-report archive)."""
    folder = tmp_path / "raw"
    deep = folder
    for _ in range(200):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "bottom.log").write_text("x\n")
    (folder / "top.log").write_text("y\n")
    left_out: list = []
    assert dict(untrusted.tree(folder, limit=100, left_out=left_out)) == {"top.log": b"y\n"}
    assert left_out == [("d/" * untrusted.MAX_DEPTH + "d", f"a folder deeper than {untrusted.MAX_DEPTH}")]
    assert [p.name for p in untrusted.walk(folder)] == ["top.log"]


def test_minimizing_a_received_bundle_replaces_links_where_it_writes(state, tmp_path, canary):
    """A bundle's reproducer/ (and its temporary name) planted as links to a host folder: the new
    reproducer replaces them and the host folder is untouched."""
    from types import SimpleNamespace

    from asanlab.reproduce import reproducer
    from asanlab.reproduce.minimize import minimize

    folder = tmp_path / "b"
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "a.php").write_text("<?php\n")
    get = lambda p: f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    _recorded(folder, [get("/a") + get("/fire")], [], name="recording.jsonl")
    (folder / "bundle.json").write_text(json.dumps({"format": source.BUNDLE_FORMAT, "recording": "recording.jsonl",
                                                    "app": {"name": "a.php", "copied": True}}))
    (folder / "reproducer").symlink_to(canary.parent)
    (folder / ".reproducer.tmp").symlink_to(canary.parent)
    before = sorted(p.name for p in canary.parent.iterdir())
    src = source.load(str(folder))
    shrunk = minimize(traffic.all_requests(src.conns), lambda keep: (1, 1) in keep)
    out = reproducer.write(src, shrunk, source.Expected("sig", "id", "memory-error", "double-free"))
    assert out == folder / "reproducer" and not out.is_symlink() and (out / "bundle.json").is_file()
    assert sorted(p.name for p in canary.parent.iterdir()) == before and digest(canary) == hashlib.sha256(SECRET).hexdigest()
