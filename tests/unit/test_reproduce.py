"""Reproduce's pure parts: what a reproduction starts from (a session or a reproducer bundle), the
bundle written and read back, and the minimization's search (the replay given as a function: the
end-to-end test in tests/docker/test_swoole.py replays into real containers)."""

import base64
import json
import random

import pytest

from asanlab.soak import load
from asanlab import session
from asanlab.run import traffic
from asanlab.errors import UsageError
from asanlab.reproduce import reproducer, source
from asanlab.reproduce.minimize import hits_needed, minimize


def _recording(path, conns: dict[int, list[bytes]], unanswered: set[tuple[int, int]] = frozenset()):
    """A recording: per connection, requests each answered 200 unless (connection, index) is in unanswered."""
    lines, t = [], 0.0
    for c, reqs in conns.items():
        lines.append({"c": c, "t": t, "open": f"172.17.0.1:{40000 + c}"})
        for i, raw in enumerate(reqs):
            t += 0.01
            lines.append({"c": c, "t": t, "in": base64.b64encode(raw).decode()})
            if (c, i) in unanswered:
                break
            lines.append({"c": c, "t": t, "out": base64.b64encode(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").decode()})
        lines.append({"c": c, "t": t, "close": "client"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def get(p: str) -> bytes:
    return f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_a_session_that_cannot_be_replayed_is_refused_before_docker(state):
    app = state / "a.php"
    app.write_text("<?php\n")
    s = session.create({"command": ["php", "/app/a.php"], "app": str(app)})
    with pytest.raises(UsageError, match="has no recorded traffic") as e:
        source.load(s.id)
    assert e.value.exit_code == 2 and "--record" in e.value.hint
    (s.path / "traffic").mkdir()
    (s.path / "traffic" / traffic.FILE).write_text('{"c": 1, "t": 0, "open": "1.2.3.4:5"}\n')
    with pytest.raises(UsageError, match="holds no request"):
        source.load(s.id)
    (s.path / "traffic" / traffic.FILE).write_text('{"c": 1, "t": 0, "in": "R0VUIC8gSFRUUC8xLjENCg0K"}\n')
    app.unlink()
    with pytest.raises(UsageError, match="is not there any more"):
        source.load(s.id)


def _requests(tmp_path, conns, unanswered=frozenset()):
    _recording(tmp_path / "r.jsonl", conns, unanswered)
    return traffic.all_requests(traffic.read(tmp_path / "r.jsonl"))


def test_the_request_a_worker_died_on_is_tried_first(tmp_path):
    """One culprit among 1,000 (each on its own connection), unanswered in the recording: found in
    three replays (the whole recording, then the culprit alone)."""
    reqs = _requests(tmp_path, {c: [get(f"/r{c}")] for c in range(1, 1001)}, unanswered={(613, 0)})
    culprit = (613, 0)
    replays = []
    shrunk = minimize(reqs, lambda keep: replays.append(len(keep)) or culprit in keep)
    assert [r.line for r in shrunk.requests] == ["GET /r613"]
    assert replays == [1000, 1]


def test_one_culprit_among_1000_without_a_hint(tmp_path):
    """Every request answered (a leak found at exit): ddmin alone, in a few dozen replays."""
    reqs = _requests(tmp_path, {1: [get(f"/r{i}") for i in range(1000)]})
    replays = []
    shrunk = minimize(reqs, lambda keep: replays.append(1) or (1, 417) in keep)
    assert [r.line for r in shrunk.requests] == ["GET /r417"]
    assert len(replays) <= 40, len(replays)


def test_two_requests_that_crash_only_together(tmp_path):
    """/arm sets state, /fire frees it twice; /fire is the unanswered one. Both are kept, on their
    connection, and nothing else."""
    conn = [get(f"/r{i}") for i in range(1000)]
    conn[200], conn[999] = get("/arm"), get("/fire")
    reqs = _requests(tmp_path, {1: conn}, unanswered={(1, 999)})
    replays = []
    shrunk = minimize(reqs, lambda keep: replays.append(1) or {(1, 200), (1, 999)} <= keep)
    assert [r.line for r in shrunk.requests] == ["GET /arm", "GET /fire"]
    assert len(replays) <= 40, len(replays)


def test_connections_are_dropped_whole_before_requests(tmp_path):
    conns = {c: [get(f"/c{c}/{i}") for i in range(20)] for c in range(1, 51)}
    reqs = _requests(tmp_path, conns)
    sizes = []
    shrunk = minimize(reqs, lambda keep: sizes.append(len(keep)) or (37, 5) in keep)
    assert [r.line for r in shrunk.requests] == ["GET /c37/5"]
    # Every candidate before the request-level search is made of whole connections.
    whole = [n for n in sizes[:8] if n % 20 == 0]
    assert whole == sizes[:8], sizes[:12]


def test_a_flaky_finding_keeps_its_rate(tmp_path):
    """A finding that comes back about 3 times in 10, and only with /bad: /bad is always kept, and
    almost nothing else (with 10 replays a candidate at the same rate is rejected now and then by
    chance, so one more request may stay: seen with 1 seed in 5 here). Both rates are said."""
    reqs = _requests(tmp_path, {c: [get("/bad" if c == 7 else f"/ok{c}")] for c in range(1, 21)})
    for seed in range(5):
        rng = random.Random(seed)
        shrunk = minimize(reqs, lambda keep: (7, 0) in keep and rng.random() < 0.3, tries=10)
        lines = [r.line for r in shrunk.requests]
        assert "GET /bad" in lines and len(lines) <= 2, (seed, lines)
        assert shrunk.tries == 10 and 1 <= shrunk.original_hits <= 10 and 1 <= shrunk.hits <= 10, shrunk


def test_a_candidate_must_not_come_back_significantly_less_often():
    """Fisher's exact test, one-sided at 5%: the fewest hits in as many replays that cannot be told
    from the whole recording's."""
    assert hits_needed(1, 1) == 1  # deterministic: it must come back
    assert hits_needed(3, 10) == 1  # 0 of 10 against 3 of 10 is chance; at least once is the floor
    assert hits_needed(10, 10) == 7  # 6 of 10 against 10 of 10: p = 0.043
    assert hits_needed(8, 10) == 4


def test_a_finding_that_never_comes_back_is_a_clear_error(tmp_path):
    reqs = _requests(tmp_path, {1: [get("/a")]})
    with pytest.raises(UsageError, match="did not come back from the whole recording in 3 replay"):
        minimize(reqs, lambda keep: False, tries=3)


def _session_with_recording(state, tmp_path):
    app_dir = tmp_path / "app"
    (app_dir / "src").mkdir(parents=True)
    (app_dir / "server.php").write_text("<?php // the app\n")
    (app_dir / "src" / "lib.php").write_text("<?php // a library\n")
    (app_dir / ".asanlab").mkdir()
    (app_dir / ".asanlab" / "big").write_bytes(b"x" * 1000)  # asanlab's own state is not the app's
    s = session.create({"command": ["php", "/app/server.php"], "app": str(app_dir / "server.php"),
                        "args": ["--mode", "x"], "user_env": {"APP_ENV": "test", "TOKEN": "***"},
                        "image": {"ref": "asanlab/php:8.2-abc", "id": "sha256:" + "1" * 64},
                        "recipe": {"name": "r", "php": {"version": "8.2"}}, "traffic": {"port": "8080/tcp"},
                        "stacks": "fast"})
    post = b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"id\": 1}"
    _recording(s.path / "traffic" / traffic.FILE, {1: [get("/a"), post], 2: [get("/b")]}, unanswered={(1, 1)})
    return s


def test_a_reproducer_bundle_runs_what_the_session_ran(state, tmp_path):
    s = _session_with_recording(state, tmp_path)
    src = source.load(s.id)
    assert (src.port, src.masked, src.image_refs) == ("8080/tcp", ["TOKEN"], ["asanlab/php:8.2-abc"])
    post = [r for r in traffic.all_requests(src.conns) if r.method == "POST"]
    shrunk = minimize(traffic.all_requests(src.conns), lambda keep: (1, 1) in keep)
    assert shrunk.requests == post
    expected = source.Expected("heap-use-after-free|zend_hash_del|...", "abc123", "memory-error", "double-free")
    folder = reproducer.write(src, shrunk, expected, {"id": "abc123"})
    assert folder == s.path / "reproducer"
    assert sorted(p.name for p in folder.iterdir()) == ["README.txt", "app", "bundle.json", "finding.json",
                                                        "recipe.yml", "recording.jsonl", "requests.jsonl"]
    assert sorted(str(p.relative_to(folder / "app")) for p in (folder / "app").rglob("*") if p.is_file()) == \
        ["server.php", "src/lib.php"]

    again = source.load(str(folder))
    assert again.bundle == folder and again.session is None
    assert again.app == folder / "app" / "server.php" and again.app.read_text() == "<?php // the app\n"
    assert (again.args, again.env, again.port) == (["--mode", "x"], {"APP_ENV": "test", "TOKEN": "***"}, "8080/tcp")
    assert (again.image_id, again.image_refs, again.recipe) == (src.image_id, src.image_refs, src.recipe)
    # Unwound as the session was (a leak's signature is its stack); older sessions and bundles: full.
    assert again.stacks == src.stacks == "fast"
    assert again.expected == [expected]
    assert not again.concurrent and json.loads((folder / "bundle.json").read_text())["replay"] == "sequential"
    [req] = traffic.all_requests(again.conns)
    assert (req.line, req.body) == ("POST /orders", b'{"id": 1}')
    # The same request in soak's --requests-file format, read by soak's own reader.
    [soaked] = load.requests_from_file(folder / "requests.jsonl", "http://127.0.0.1:9501/")
    assert (soaked.method, soaked.url, soaked.body) == ("POST", "http://127.0.0.1:9501/orders", b'{"id": 1}')
    assert dict(soaked.headers) == {"content-type": "application/json"}
    readme = (folder / "README.txt").read_text()
    assert "asanlab reproduce THIS_FOLDER --image NEW_IMAGE" in readme and "1 request(s), kept from 3" in readme


def test_a_bundle_written_again_replaces_the_old_one(state, tmp_path):
    s = _session_with_recording(state, tmp_path)
    src = source.load(s.id)
    expected = source.Expected("sig", "id1", "memory-error", "double-free")
    reqs = traffic.all_requests(src.conns)
    reproducer.write(src, minimize(reqs, lambda keep: True), expected)
    (s.path / "reproducer" / "stale").write_text("old")
    folder = reproducer.write(src, minimize(reqs, lambda keep: (1, 1) in keep), expected)
    assert not (folder / "stale").exists() and not (folder / "finding.json").exists()
    assert len(traffic.all_requests(source.load(str(folder)).conns)) == 1
    # Minimized with its connections overlapping as recorded: the bundle replays that way too.
    folder = reproducer.write(src, minimize(reqs, lambda keep: (1, 1) in keep), expected, concurrent=True)
    assert source.load(str(folder)).concurrent


def test_a_bad_bundle_is_a_clear_error(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "bundle.json").write_text("[1]")
    with pytest.raises(UsageError, match="not a reproducer bundle"):
        source.load(str(folder))
    (folder / "bundle.json").write_text(json.dumps({"format": "something/9"}))
    with pytest.raises(UsageError, match="format 'something/9'"):
        source.load(str(folder))
    (folder / "bundle.json").write_text(json.dumps({"format": source.BUNDLE_FORMAT, "recording": "r.jsonl"}))
    with pytest.raises(UsageError, match="field 'app' must be an object"):
        source.load(str(folder))
    (folder / "bundle.json").write_text(json.dumps({"format": source.BUNDLE_FORMAT, "recording": "r.jsonl",
                                                    "app": {"name": "a.php", "copied": True}}))
    with pytest.raises(UsageError, match="its app app/a.php is not a regular file in the bundle"):
        source.load(str(folder))
    (folder / "app").mkdir()
    (folder / "app" / "a.php").write_text("<?php\n")
    with pytest.raises(UsageError, match="its recording 'r.jsonl' is not a regular file in the bundle"):
        source.load(str(folder))
    archive = tmp_path / "asanlab-x.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    with pytest.raises(UsageError, match="unpack it"):
        source.load(str(archive))


def test_a_session_run_under_valgrind_is_replayed_under_valgrind(state, tmp_path):
    """`run --valgrind`'s findings are memcheck's: a replay without it could not bring them back."""
    s = _session_with_recording(state, tmp_path)
    assert not source.load(s.id).valgrind
    s.data["command"] = ["valgrind", "--tool=memcheck", "php", "/app/server.php"]  # a session from before the flag
    s.save()
    src = source.load(s.id)
    assert src.valgrind
    expected = source.Expected("invalid-write | memset", "abc", "memory-error", "invalid-write")
    folder = reproducer.write(src, minimize(traffic.all_requests(src.conns), lambda keep: True), expected)
    assert source.load(str(folder)).valgrind
    s.data.update({"command": ["php", "/app/server.php"], "valgrind": True})
    s.save()
    assert source.load(s.id).valgrind


def test_minimize_takes_the_one_error_finding_when_none_is_named():
    from types import SimpleNamespace

    from asanlab.cli.reproducing import _only_error
    from asanlab.errors import UsageError
    from asanlab.reproduce.source import Expected

    crash = Expected("double-free | f", "aaa", "error", "double-free")
    leak = Expected("leak | g", "bbb", "leak", "leak")
    assert _only_error(SimpleNamespace(id="s", expected=[leak, crash])) == [crash]
    assert _only_error(SimpleNamespace(id="s", expected=[leak])) == [leak]  # no error: the one finding
    two = SimpleNamespace(id="s", expected=[crash, Expected("heap-use-after-free | h", "ccc", "error", "uaf")])
    with pytest.raises(UsageError) as e:
        _only_error(two)
    assert "2 failing finding(s): name the one to keep (aaa (error), ccc (error))" in e.value.message
    with pytest.raises(UsageError):
        _only_error(SimpleNamespace(id="s", expected=[]))
