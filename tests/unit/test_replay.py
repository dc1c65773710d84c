"""One replay of a recording (asanlab/reproduce/replay.py) against a real HTTP server on 127.0.0.1:
sequential replays keep connections apart, concurrent ones overlap them as recorded, and a
minimization's candidate does not wait for the requests it dropped."""

import base64
import http.server
import json
import threading
import time

import pytest

from asanlab.events import null_reporter
from asanlab.reproduce.replay import Replay
from asanlab.run import DriverContext, traffic


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        started = time.monotonic()
        if self.path == "/slow":
            time.sleep(0.6)
        if self.path == "/die":  # as a Swoole master whose worker died: the connection stays, silent
            self.server.seen.append((self.path, started, None))
            self.server.closing.wait(20)
            return
        self.server.seen.append((self.path, started, time.monotonic()))
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.seen = []
    srv.closing = threading.Event()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.closing.set()
    srv.shutdown()
    srv.server_close()


def _get(path: str) -> str:
    return base64.b64encode(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()).decode()


def _ok() -> str:
    return base64.b64encode(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").decode()


def _write(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return traffic.read(path)


# Connection 1 asks for /slow at 0 s (answered after 0.6 s); connection 2 opens at 0.2 s and asks for /fast,
# answered at once: the two were in flight together when recorded.
OVERLAPPING = [
    {"c": 1, "t": 10.0, "open": "172.17.0.1:40001"}, {"c": 1, "t": 10.0, "in": _get("/slow")},
    {"c": 2, "t": 10.2, "open": "172.17.0.1:40002"}, {"c": 2, "t": 10.2, "in": _get("/fast")},
    {"c": 2, "t": 10.21, "out": _ok()}, {"c": 2, "t": 10.3, "close": "client"},
    {"c": 1, "t": 10.6, "out": _ok()}, {"c": 1, "t": 10.7, "close": "client"},
]


def _replay(conns, port, **kw):
    replay = Replay(conns, port, **kw)
    replay(DriverContext(container=None, session=None, stop=threading.Event(), reporter=null_reporter))
    return replay.result


def test_a_sequential_replay_sends_one_connection_after_the_other(tmp_path, server):
    conns = _write(tmp_path / "r.jsonl", OVERLAPPING)
    done = _replay(conns, server.server_port)
    assert (done.connections, done.requests, done.unanswered, done.concurrent) == (2, 2, [], False)
    (slow, s_start, s_end), (fast, f_start, _) = server.seen
    assert (slow, fast) == ("/slow", "/fast") and f_start >= s_end


def test_a_concurrent_replay_overlaps_the_connections_as_recorded(tmp_path, server):
    conns = _write(tmp_path / "r.jsonl", OVERLAPPING)
    started = time.monotonic()
    done = _replay(conns, server.server_port, concurrent=True)
    assert (done.connections, done.requests, done.unanswered, done.concurrent) == (2, 2, [], True)
    by_path = {p: (start, end) for p, start, end in server.seen}
    # /fast went 0.2 s after /slow, while /slow was still being served: as recorded.
    assert by_path["/slow"][0] < by_path["/fast"][0] < by_path["/slow"][1]
    assert by_path["/fast"][0] - by_path["/slow"][0] == pytest.approx(0.2, abs=0.15)
    assert done.to_dict()["concurrent"] is True
    assert time.monotonic() - started < 5  # recorded at 10 s: times count from the first connection


def test_a_candidate_does_not_wait_for_the_requests_it_dropped(tmp_path, server):
    """A minimization keeps /late (30 s into the recording) alone: it goes at once."""
    conns = _write(tmp_path / "r.jsonl", [
        {"c": 1, "t": 0.0, "open": "172.17.0.1:40001"}, {"c": 1, "t": 0.0, "in": _get("/early")},
        {"c": 1, "t": 0.01, "out": _ok()}, {"c": 1, "t": 30.0, "in": _get("/late")},
        {"c": 1, "t": 30.01, "out": _ok()}, {"c": 1, "t": 31.0, "close": "client"},
    ])
    started = time.monotonic()
    done = _replay(conns, server.server_port, keep={(1, 1)}, concurrent=True)
    assert done.requests == 1 and [p for p, _, _ in server.seen] == ["/late"]
    assert time.monotonic() - started < 5


def test_a_stopped_concurrent_replay_returns_without_waiting(tmp_path, server):
    conns = _write(tmp_path / "r.jsonl", [
        {"c": 1, "t": 0.0, "open": "172.17.0.1:40001"}, {"c": 1, "t": 0.0, "in": _get("/fast")},
        {"c": 2, "t": 60.0, "open": "172.17.0.1:40002"}, {"c": 2, "t": 60.0, "in": _get("/fast")},
    ])
    stop = threading.Event()
    replay = Replay(conns, server.server_port, concurrent=True)
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    replay(DriverContext(container=None, session=None, stop=stop, reporter=null_reporter))
    assert time.monotonic() - started < 10 and replay.result.requests == 1


def test_connections_open_at_once_are_counted_from_the_recording(tmp_path):
    assert traffic.most_open_at_once(_write(tmp_path / "a.jsonl", OVERLAPPING)) == 2
    back_to_back = [
        {"c": 1, "t": 0.0, "open": "p"}, {"c": 1, "t": 0.0, "in": _get("/a")}, {"c": 1, "t": 1.0, "close": "client"},
        {"c": 2, "t": 1.0, "open": "p"}, {"c": 2, "t": 1.0, "in": _get("/b")}, {"c": 2, "t": 2.0, "close": "app"},
    ]
    assert traffic.most_open_at_once(_write(tmp_path / "b.jsonl", back_to_back)) == 1
    # A connection never closed lasts until its last bytes.
    unclosed = [{"c": 1, "t": 0.0, "open": "p"}, {"c": 1, "t": 5.0, "in": _get("/a")},
                {"c": 2, "t": 4.0, "open": "p"}, {"c": 2, "t": 4.0, "in": _get("/b")}]
    assert traffic.most_open_at_once(_write(tmp_path / "c.jsonl", unclosed)) == 2


@pytest.fixture
def ws_server():
    """A real WebSocket server (aiohttp's) on 127.0.0.1: the messages it received, in order."""
    import asyncio

    from aiohttp import WSMsgType, web

    received: list[str] = []

    async def handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                received.append(msg.data)
                await ws.send_str("got " + msg.data)
            elif msg.type == WSMsgType.BINARY:
                received.append(f"{len(msg.data)} bytes")
        return ws

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port, received
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _ws_conversation(deflate: bool = False):
    """A client's upgrade, the app's 101 and the client's frames, as wsproto writes them; with
    `deflate`, compression offered and accepted (as browsers and Swoole with zlib do)."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage
    from wsproto.extensions import PerMessageDeflate

    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    upgrade = client.send(Request(host="x", target="/ws", extensions=[PerMessageDeflate()] if deflate else []))
    server.receive_data(upgrade)
    list(server.events())
    accepted = server.send(AcceptConnection(extensions=[PerMessageDeflate()] if deflate else []))
    client.receive_data(accepted)
    list(client.events())
    frames = [client.send(TextMessage(data="hello")), client.send(TextMessage(data="fire")),
              client.send(BytesMessage(data=b"\0" * 300)), client.send(CloseConnection(code=1000))]
    return upgrade, accepted, frames


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_websocket_is_recorded_as_its_upgrade_and_messages_and_replayed(tmp_path, ws_server):
    port, received = ws_server
    upgrade, accepted, (hello, fire, blob, close) = _ws_conversation()
    conns = _write(tmp_path / "r.jsonl", [
        {"c": 1, "t": 0.0, "open": "p"}, {"c": 1, "t": 0.0, "in": _get("/before")}, {"c": 1, "t": 0.01, "out": _ok()},
        {"c": 1, "t": 0.1, "in": _b64(upgrade)}, {"c": 1, "t": 0.11, "out": _b64(accepted)},
        {"c": 1, "t": 0.2, "in": _b64(hello)},
        {"c": 1, "t": 0.3, "in": _b64(fire + blob[:10])},  # a frame cut across two reads
        {"c": 1, "t": 5.0, "in": _b64(blob[10:] + close)}, {"c": 1, "t": 5.1, "close": "app"},
    ])
    [conn] = conns
    # The upgrade is answered (101), not a request the app never answered.
    assert [(r.line, r.status) for r in conn.requests] == [("GET /before", 200), ("GET /ws", 101)]
    assert conn.upgraded
    assert [(m.line, m.time) for m in conn.messages] == [
        ("WebSocket text 5 B 'hello'", 0.2), ("WebSocket text 4 B 'fire'", 0.3), ("WebSocket binary 300 B", 5.0),
        ("WebSocket close 0 B code 1000", 5.0)]
    assert [m.index for m in conn.messages] == [2, 3, 4, 5]  # after the connection's two requests
    started = time.monotonic()
    done = _replay(conns, port)  # all of it, byte for byte
    assert received == ["hello", "fire", "300 bytes"]
    assert (done.requests, done.websocket_connections, done.unanswered, done.failed_connections) == (2, 1, [], 0)
    assert time.monotonic() - started < 5  # the recorded 4.7 s of silence is not waited out one after another

    # A minimization's candidate: one message kept; the upgrade goes with it, the GET before it does not.
    received.clear()
    done = _replay(conns, port, keep={(1, 3)})
    assert received == ["fire"] and (done.requests, done.websocket_connections) == (1, 1)
    # Written as a recording of its own (a reproducer bundle's), it reads back as the same.
    traffic.write(tmp_path / "kept.jsonl", conns, {(1, 3), (1, 4)})
    [again] = traffic.read(tmp_path / "kept.jsonl")
    assert [(r.line, r.status) for r in again.requests] == [("GET /ws", 101)]
    assert [m.line for m in again.messages] == ["WebSocket text 4 B 'fire'", "WebSocket binary 300 B"]
    assert [m.line for m in traffic.all_units(conns)] == [
        "GET /before", "GET /ws", "WebSocket text 5 B 'hello'", "WebSocket text 4 B 'fire'", "WebSocket binary 300 B",
        "WebSocket close 0 B code 1000"]


def test_a_websocket_replayed_concurrently_keeps_its_recorded_gaps(tmp_path, ws_server):
    port, received = ws_server
    upgrade, accepted, (hello, fire, _, close) = _ws_conversation()
    conns = _write(tmp_path / "r.jsonl", [
        {"c": 1, "t": 0.0, "open": "p"}, {"c": 1, "t": 0.0, "in": _b64(upgrade)}, {"c": 1, "t": 0.01, "out": _b64(accepted)},
        {"c": 1, "t": 0.1, "in": _b64(hello)}, {"c": 1, "t": 1.6, "in": _b64(fire + close)},
    ])
    started = time.monotonic()
    done = _replay(conns, port, concurrent=True)
    assert received == ["hello", "fire"] and done.websocket_connections == 1
    assert time.monotonic() - started >= 1.5


def test_a_minimization_keeps_the_websocket_messages_that_matter(tmp_path):
    """Messages are units of their own: the one that trips the bug is kept, with its upgrade when replayed."""
    from asanlab.reproduce.minimize import minimize

    upgrade, accepted, (hello, fire, blob, close) = _ws_conversation()
    conns = _write(tmp_path / "r.jsonl", [
        {"c": 1, "t": 0.0, "open": "p"}, {"c": 1, "t": 0.0, "in": _get("/before")}, {"c": 1, "t": 0.01, "out": _ok()},
        {"c": 2, "t": 0.1, "open": "p"}, {"c": 2, "t": 0.1, "in": _b64(upgrade)}, {"c": 2, "t": 0.11, "out": _b64(accepted)},
        {"c": 2, "t": 0.2, "in": _b64(hello)}, {"c": 2, "t": 0.3, "in": _b64(fire)}, {"c": 2, "t": 0.4, "in": _b64(blob)},
        {"c": 2, "t": 0.5, "in": _b64(close)},
    ])
    units = traffic.all_units(conns)
    assert not any(u.unanswered for u in units)  # a WebSocket message waits for no answer
    shrunk = minimize(units, lambda keep: (2, 2) in keep)  # the "fire" message (after the upgrade, #0)
    assert [u.line for u in shrunk.requests] == ["WebSocket text 4 B 'fire'"]
    requests, after = traffic.kept(conns[1], {(2, 2)})
    assert [r.line for r in requests] == ["GET /ws"] and len(after) == 1


def test_answers_unlike_the_recording_are_counted_and_another_apps_recording_is_told(tmp_path, server):
    from asanlab.reproduce.replay import Replayed
    from asanlab.reproduce.target import Outcome

    conns = _write(tmp_path / "r.jsonl", [
        {"c": 1, "t": 0.0, "open": "p"}, {"c": 1, "t": 0.0, "in": _get("/fast")}, {"c": 1, "t": 0.01, "out": _ok()},
        {"c": 1, "t": 0.1, "in": _get("/missing")}, {"c": 1, "t": 0.11, "out": _ok()},
        {"c": 1, "t": 0.2, "in": _get("/never")},  # in flight when recorded: nothing to compare
    ])
    done = _replay(conns, server.server_port)
    assert (done.requests, done.compared) == (3, 2)
    assert done.differed == ["GET /missing (connection 1 #1): 200 recorded, 404 now"]

    other = Replayed(requests=5, compared=4, differed=["x"] * 4)
    assert Outcome(runs=2, original=["sig"], replayed=[other, other]).not_this_app
    # Some answers alike, too few to tell, or the recorded finding back: not another app's recording.
    assert not Outcome(runs=2, original=["sig"], replayed=[other, done]).not_this_app
    assert not Outcome(runs=1, original=["sig"], replayed=[Replayed(compared=2, differed=["x", "y"])]).not_this_app
    assert not Outcome(runs=1, original=["sig"], seen={"sig": 1}, replayed=[other]).not_this_app


def test_an_answer_is_given_up_soon_after_the_manager_logs_a_workers_death(tmp_path, server):
    """In process mode the request a worker died on stays open and silent: once the app's output has
    Swoole's `abnormal exit` line, the replay gives it up after DEATH_GRACE, not ANSWER_TIMEOUT (and
    every minimization candidate that crashes saves the difference)."""
    from types import SimpleNamespace

    from asanlab.reproduce.replay import ANSWER_TIMEOUT, DEATH_GRACE

    log = tmp_path / "output.log"
    log.write_text("server started\n")
    conns = _write(tmp_path / "r.jsonl", [{"c": 1, "t": 1.0, "open": "172.17.0.1:40001"},
                                          {"c": 1, "t": 1.0, "in": _get("/die")}])

    def worker_dies():
        while not server.seen:
            time.sleep(0.05)
        time.sleep(0.5)
        with open(log, "a") as f:
            f.write("[2026-11-30 20:50:01 $1.0]\tWARNING\tServer::check_worker_exit_status(): "
                    "worker(pid=8, id=1) abnormal exit, status=0, signal=11\n")

    threading.Thread(target=worker_dies, daemon=True).start()
    replay = Replay(conns, server.server_port)
    started = time.monotonic()
    replay(DriverContext(container=None, session=SimpleNamespace(output_log=log), stop=threading.Event(),
                         reporter=null_reporter))
    took = time.monotonic() - started
    assert replay.result.unanswered == ["GET /die (connection 1 #0)"]
    assert 0.5 + DEATH_GRACE - 0.3 < took < ANSWER_TIMEOUT - 3, took


def test_compressed_websocket_messages_are_read_and_a_candidates_are_sent_plain(tmp_path, ws_server):
    """Where the app accepted permessage-deflate (every browser offers it), the client's messages
    are read decompressed, so a minimization still works on messages; a candidate's kept message is
    sent uncompressed (valid on a deflate connection, and independent of the dropped messages'
    compression context). Unaccepted compressed frames are no messages: the connection goes whole."""
    port, received = ws_server
    upgrade, accepted, (hello, fire, blob, close) = _ws_conversation(deflate=True)
    assert b"permessage-deflate" in accepted and fire[0] & 0x40  # RSV1: compressed
    events = [{"c": 1, "t": 0.0, "open": "p"}, {"c": 1, "t": 0.0, "in": _b64(upgrade)},
              {"c": 1, "t": 0.01, "out": _b64(accepted)}, {"c": 1, "t": 0.2, "in": _b64(hello)},
              {"c": 1, "t": 0.3, "in": _b64(fire)}, {"c": 1, "t": 0.4, "in": _b64(blob + close)},
              {"c": 1, "t": 0.5, "close": "app"}]
    [conn] = _write(tmp_path / "r.jsonl", events)
    assert traffic.deflated(conn)
    assert [m.line for m in conn.messages] == ["WebSocket text 5 B 'hello'", "WebSocket text 4 B 'fire'",
                                               "WebSocket binary 300 B", "WebSocket close 0 B code 1000"]
    done = _replay([conn], port)  # byte for byte, compressed as recorded
    assert received == ["hello", "fire", "300 bytes"] and done.websocket_connections == 1
    received.clear()
    _replay([conn], port, keep={(1, 2)})  # "fire" alone: its compressed form needs "hello"'s context
    assert received == ["fire"]

    # The same frames where the recorded 101 accepted no compression: not readable as messages.
    plain_101 = accepted.replace(b"Sec-WebSocket-Extensions", b"X-Not-Extensions")
    events[2] = {"c": 1, "t": 0.01, "out": _b64(plain_101)}
    [whole] = _write(tmp_path / "w.jsonl", events)
    assert not traffic.deflated(whole) and whole.messages == []
    assert traffic.kept(whole, {(1, 0)}) == (whole.requests, whole.after_requests())


def test_a_concurrent_replay_of_extreme_recorded_times_neither_hangs_nor_skips(tmp_path, server, monkeypatch):
    """A recording from elsewhere (or hand-edited) with gaps of years, or past what a wait can take,
    hung the replay or ended a connection's thread, and a request went unsent under a result."""
    from asanlab.reproduce import replay as replay_module

    assert replay_module.schedule([-1e300, 1e9, 1e300, 1e9]) == {-1e300: 0.0, 1e9: 60.0, 1e300: 120.0}
    assert replay_module.schedule([10.0, 10.2, 10.6]) == {10.0: 0.0, 10.2: pytest.approx(0.2), 10.6: pytest.approx(0.6)}
    conns = _write(tmp_path / "r.jsonl", [
        {"c": 1, "t": -1e300, "open": "172.17.0.1:40001"}, {"c": 1, "t": -1e300, "in": _get("/first")},
        {"c": 2, "t": 1e9, "open": "172.17.0.1:40002"}, {"c": 2, "t": 1e9, "in": _get("/second")},
        {"c": 3, "t": 1e300, "open": "172.17.0.1:40003"}, {"c": 3, "t": 1e300, "in": _get("/third")},
    ])
    monkeypatch.setattr(replay_module, "GAP_CAP", 0.3)  # the cap's length, not its existence, is shortened
    started = time.monotonic()
    done = _replay(conns, server.server_port, concurrent=True)
    assert done.requests == 3 and sorted(p for p, _, _ in server.seen) == ["/first", "/second", "/third"]
    assert time.monotonic() - started < 10
