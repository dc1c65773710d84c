"""The recording proxy (asanlab/run/proxy.py) in front of a real HTTP server on 127.0.0.1, and the
requests read back from what it recorded (asanlab/run/traffic.py)."""

import http.server
import json
import socket
import threading
import time

import requests

from asanlab.run import proxy, traffic


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):
        self._answer(b"")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer(body)

    def _answer(self, body: bytes):
        status = 404 if self.path == "/missing" else 200
        out = b"got " + self.path.encode() + b" " + body
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_byte_is_recorded_and_read_back_as_requests(tmp_path):
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    port = free_port()
    rec = proxy.Recorder(("127.0.0.1", port), ("127.0.0.1", app.server_address[1]), tmp_path / "traffic" / traffic.FILE)
    rec.start()
    try:
        with requests.Session() as s:  # one keep-alive connection, three requests
            assert s.get(f"http://127.0.0.1:{port}/a?x=1").text == "got /a?x=1 "
            assert s.post(f"http://127.0.0.1:{port}/b", data=iter([b"he", b"llo"])).text == "got /b hello"  # chunked
            assert s.get(f"http://127.0.0.1:{port}/missing").status_code == 404
        with socket.create_connection(("127.0.0.1", port)) as c:  # two pipelined requests, then one unanswered
            c.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while got.count(b"HTTP/1.1 200") < 2:
                got += c.recv(4096)
        time.sleep(0.2)
    finally:
        rec.stop()
        app.shutdown()
    conns = traffic.read(tmp_path / "traffic" / traffic.FILE)
    assert len(conns) == 2 and rec.connections == 2
    first = traffic.requests_of(conns[0])
    assert [(r.line, r.status) for r in first] == [("GET /a?x=1", 200), ("POST /b", 200), ("GET /missing", 404)]
    assert first[1].body == b"hello" and ("transfer-encoding", "chunked") in first[1].headers
    assert b"".join(r.raw for r in first) == conns[0].inbound  # exactly what the app received
    pipelined = traffic.requests_of(conns[1])
    assert [(r.line, r.status, r.index) for r in pipelined] == [("GET /p1", 200, 0), ("GET /p2", 200, 1)]
    assert [r.line for r in traffic.all_requests(conns)] == ["GET /a?x=1", "POST /b", "GET /missing", "GET /p1", "GET /p2"]


def test_a_request_the_app_never_answered_has_no_status(tmp_path):
    path = tmp_path / traffic.FILE
    import base64, json
    lines = [{"c": 1, "t": 0, "open": "1.2.3.4:5"},
             {"c": 1, "t": 0.1, "in": base64.b64encode(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /crash HTTP/1.1\r\nHost: x\r\n\r\n").decode()},
             {"c": 1, "t": 0.2, "out": base64.b64encode(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").decode()},
             {"c": 1, "t": 0.3, "close": "app"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"c\": 1, \"t\": 0.4, \"in\": \"cut")
    [conn] = traffic.read(path)
    assert conn.closed_by == "app"
    assert [(r.line, r.status) for r in traffic.requests_of(conn)] == [("GET /ok", 200), ("GET /crash", None)]


def test_a_port_in_use_is_a_clear_error(tmp_path):
    import pytest
    from asanlab.errors import UsageError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        rec = proxy.Recorder(("127.0.0.1", busy.getsockname()[1]), ("127.0.0.1", 1), tmp_path / "t.jsonl")
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1"):
            rec.start()
    assert not (tmp_path / "t.jsonl").exists()


def test_a_shrunk_recording_keeps_only_the_requests_asked_for(tmp_path):
    import base64, json
    path = tmp_path / traffic.FILE
    two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    lines = [{"c": 1, "t": 0, "open": "p:1"}, {"c": 1, "t": 0.1, "in": base64.b64encode(two).decode()},
             {"c": 2, "t": 0.2, "open": "p:2"},
             {"c": 2, "t": 0.3, "in": base64.b64encode(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n").decode()}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    conns = traffic.read(path)
    out = tmp_path / "min" / "minimized.jsonl"
    traffic.write(out, conns, {(1, 1)})
    [conn] = traffic.read(out)
    [req] = traffic.requests_of(conn)
    assert (conn.id, req.line, req.body) == (1, "POST /b", b"hi")
    assert conn.inbound == two[two.index(b"POST"):]


def test_stopping_with_connections_open_logs_nothing(tmp_path, caplog):
    """A client still connected when the run ends: its connection is closed, its bytes are kept,
    and asyncio has no cancelled task to complain about on the user's terminal."""
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    rec = proxy.Recorder(("127.0.0.1", 0), ("127.0.0.1", app.server_address[1]), tmp_path / traffic.FILE)
    rec.start()
    try:
        with socket.create_connection(("127.0.0.1", rec.listen[1])) as c:
            c.sendall(b"GET /open HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"got /open" not in got:  # the head and the body may come in two segments
                chunk = c.recv(4096)
                assert chunk, got
                got += chunk
            rec.stop()  # the client has not closed
            assert c.recv(4096) == b""
    finally:
        app.shutdown()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
    [conn] = traffic.read(tmp_path / traffic.FILE)
    assert [r.line for r in traffic.requests_of(conn)] == ["GET /open"]


def test_a_recording_past_its_limit_keeps_forwarding_and_says_where_it_was_cut(tmp_path):
    from asanlab.run.recording import traffic_summary
    from asanlab.session import create

    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    rec = proxy.Recorder(("127.0.0.1", 0), ("127.0.0.1", app.server_address[1]), tmp_path / traffic.FILE, limit=2000)
    rec.start()
    try:
        with requests.Session() as s:
            answers = [s.get(f"http://127.0.0.1:{rec.listen[1]}/r{n}").text for n in range(40)]
        time.sleep(0.2)
    finally:
        rec.stop()
        app.shutdown()
    assert answers == [f"got /r{n} " for n in range(40)]  # every request reached the app
    kept = traffic.all_requests(traffic.read(tmp_path / traffic.FILE))
    assert 0 < len(kept) < 40 and [r.line for r in kept] == [f"GET /r{n}" for n in range(len(kept))]
    assert rec.cut_at is not None and rec.written < 2000 + 1000
    events = []
    summary = traffic_summary(rec, create({"command": ["php"]}), events.append)
    assert summary["cut_at"] == rec.cut_at and summary["unanswered"] == []  # the cut is no lost answer
    assert any("stopped keeping bytes at 0 MiB" in e.message for e in events)


RECORDER_WITH_FEW_DESCRIPTORS = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
from asanlab.run import proxy
rec = proxy.Recorder(("127.0.0.1", int(sys.argv[1])), ("127.0.0.1", int(sys.argv[2])), Path(sys.argv[3]))
rec.start()
print("ready", flush=True)
sys.stdin.readline()
rec.stop()
print(json.dumps({"dropped": rec.dropped, "reason": rec.drop_reason, "connections": rec.connections}), flush=True)
"""


def test_more_clients_than_the_proxys_descriptors_are_counted_as_its_drops_not_the_apps(tmp_path):
    """Hundreds of connections at once past the recorder's open-files limit gave thousands of
    tracebacks, and its own failures were recorded as the app closing the connection."""
    import subprocess
    import sys

    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    port, out = free_port(), tmp_path / traffic.FILE
    rec = subprocess.Popen([sys.executable, "-c", RECORDER_WITH_FEW_DESCRIPTORS, str(port), str(app.server_address[1]),
                            str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = []
    try:
        assert rec.stdout.readline().strip() == "ready"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as first:  # the app is seen to listen
            first.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert first.recv(100).startswith(b"HTTP/1.")
        for _ in range(120):  # held open at once: each costs the proxy two descriptors
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=1)
                c.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                clients.append(c)
            except OSError:
                pass
        time.sleep(1)
        for c in clients:
            c.close()
        said, errors = rec.communicate("stop\n", timeout=60)
    finally:
        rec.kill()
        app.shutdown()
    result = json.loads(said.strip().splitlines()[-1])
    assert "Traceback" not in errors, errors[-2000:]
    assert result["dropped"] > 0 and "Too many open files" in result["reason"], result
    closes = [json.loads(line).get("close") for line in out.read_text().splitlines() if '"close"' in line]
    # The connections the proxy could not carry say so, and none of them passes for the app
    # closing it (before, each was recorded as "app").
    assert closes.count("proxy") == result["dropped"], (result, closes)
    assert closes.count("app") <= result["connections"] - result["dropped"], (result, closes)


def test_connections_one_at_a_time_are_the_recordings_connections(tmp_path):
    """each_connection (the end-of-run summary's reader) gives what read() gives, in the same order,
    also for lines of connections interleaved, answers after a close, and lines cut short."""
    import base64 as b64

    def line(**e):
        return json.dumps(e) + "\n"

    get = lambda p: b64.b64encode(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()).decode()
    ok = b64.b64encode(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").decode()
    f = tmp_path / traffic.FILE
    f.write_text(line(c=2, t=0.5, open="b") + line(c=1, t=0.1, open="a") + line(c=1, t=0.2, **{"in": get("/a")})
                 + line(c=2, t=0.6, **{"in": get("/b")}) + line(c=1, t=0.3, close="client")
                 + line(c=1, t=0.4, out=ok) + '{"c": 2, "t": 0.7, "ou' + "\n" + line(c=3, t=0.8, **{"in": get("/c")})
                 + line(t=0.9, cut=100))
    whole = [(c.id, c.opened, c.sent, c.answered, c.closed_by) for c in traffic.read(f)]
    one_by_one = [(c.id, c.opened, c.sent, c.answered, c.closed_by) for c in traffic.each_connection(f)]
    assert one_by_one == whole and [c for c, *_ in whole] == [1, 2, 3]
    assert [r.status for c in traffic.each_connection(f) for r in c.requests] == [200, None, None]


SUMMARY_MEMORY = """
import resource, sys, types
from pathlib import Path
from asanlab.run import recording
recorder = types.SimpleNamespace(out=Path(sys.argv[1]), connections=0, bytes_in=0, cut_at=None, limit=1 << 30,
                                 dropped=0, drop_reason=None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = recording.traffic_summary(recorder, None, lambda e: None)
print(summary["requests"], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_the_end_of_run_summary_of_a_large_recording_holds_one_connection_at_a_time(tmp_path):
    """The summary at the recording's 1 GiB cap read it whole (2.6 GB at its peak): now its memory
    is one connection's, whatever the recording's size (here 120 MiB in 120 connections)."""
    import base64 as b64
    import subprocess
    import sys

    body = b"x" * (1 << 20)
    request = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    payload = b64.b64encode(request).decode()
    ok = b64.b64encode(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").decode()
    f = tmp_path / traffic.FILE
    with open(f, "w") as out:
        for c in range(1, 121):
            out.write(json.dumps({"c": c, "t": c * 0.01, "open": "p"}) + "\n")
            out.write(json.dumps({"c": c, "t": c * 0.01, "in": payload}) + "\n")
            out.write(json.dumps({"c": c, "t": c * 0.01, "out": ok}) + "\n")
            out.write(json.dumps({"c": c, "t": c * 0.01, "close": "client"}) + "\n")
    assert f.stat().st_size > 160 << 20
    done = subprocess.run([sys.executable, "-c", SUMMARY_MEMORY, str(f)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    requests, grew_mib = map(int, done.stdout.split())
    assert requests == 120
    assert grew_mib < 40, f"the summary's peak memory grew by {grew_mib} MiB for a 160 MiB recording"
