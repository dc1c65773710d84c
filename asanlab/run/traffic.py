"""Recorded traffic: what each client sent the app and what it answered, per connection, and the
HTTP/1.1 requests read from it (h11). Pure: no sockets, no Docker.

A recording is a JSON-lines file (session traffic/connections.jsonl), one event per line:

    {"c": 1, "t": 0.012, "open": "172.17.0.1:40312"}     a client connected (t: seconds since start)
    {"c": 1, "t": 0.013, "in": "<base64>"}               bytes the client sent
    {"c": 1, "t": 0.020, "out": "<base64>"}              bytes the app answered
    {"c": 1, "t": 0.500, "close": "client"}              who closed first: client or app

Bytes are kept as they came, so a replay sends exactly what the app received: keep-alive,
pipelining and chunked bodies included. Requests are parsed from them when needed.
"""

from __future__ import annotations

import base64
import heapq
from array import array
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

import h11

from .. import untrusted
from ..errors import UsageError

FILE = "connections.jsonl"
# A recording the proxy wrote stops keeping bytes at 1 GiB (proxy.LIMIT_BYTES); one from elsewhere
# larger than twice that is not read.
RECORDING_LIMIT = 2 << 30


@dataclass
class Connection:
    id: int
    opened: float
    peer: str = ""
    sent: list[tuple[float, bytes]] = field(default_factory=list)  # client -> app
    answered: list[tuple[float, bytes]] = field(default_factory=list)  # app -> client
    closed_by: str | None = None  # None: still open when the recording ended
    closed: float | None = None  # when it closed

    @property
    def last(self) -> float:
        """When it was last seen: its close, else its last bytes either way."""
        if self.closed is not None:
            return self.closed
        return max([self.opened] + [t for t, _ in self.sent] + [t for t, _ in self.answered])

    @property
    def inbound(self) -> bytes:
        return b"".join(b for _, b in self.sent)

    @cached_property
    def requests(self) -> list["HttpRequest"]:
        """Its requests, parsed once: a reproduction replays the same recording many times."""
        return requests_of(self)

    @property
    def upgraded(self) -> bool:
        """Its last request switched it to WebSocket (the app answered 101)."""
        return bool(self.requests) and self.requests[-1].status == 101

    def after_requests(self) -> list[tuple[float, bytes]]:
        """What the client sent past its HTTP requests, with when: a WebSocket's frames after the
        upgrade, or bytes that are not HTTP/1.1."""
        skip = sum(len(r.raw) for r in self.requests)
        out = []
        for t, data in self.sent:
            if skip >= len(data):
                skip -= len(data)
                continue
            out.append((t, data[skip:]))
            skip = 0
        return out

    @cached_property
    def messages(self) -> list["WsMessage"]:
        """The WebSocket messages the client sent after the upgrade (wsproto), each with when its
        last frame arrived; [] for a connection that stayed HTTP."""
        return ws_messages(self) if self.upgraded else []


@dataclass
class HttpRequest:
    connection: int
    index: int  # its place on its connection, from 0
    time: float  # when its first byte arrived
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lower-cased (h11)
    body: bytes
    raw: bytes  # exactly the bytes the app received for it
    status: int | None = None  # the app's answer; None: never answered (in flight when it stopped)

    @property
    def line(self) -> str:
        return f"{self.method} {self.target}"

    @property
    def unanswered(self) -> bool:
        return self.status is None


@dataclass
class WsMessage:
    """A message a client sent on a WebSocket. Its index follows its connection's HTTP requests'
    (the upgrade is the last of them), so (connection, index) names requests and messages alike."""

    connection: int
    index: int
    time: float  # when its last frame arrived
    kind: str  # text, binary, ping, pong, close
    payload: bytes
    code: int | None = None  # a close's status code

    unanswered = False  # WebSocket has no answer to wait for

    @property
    def size(self) -> int:
        return len(self.payload)

    @property
    def line(self) -> str:
        if self.kind == "text":
            return f"WebSocket text {self.size} B {self.payload[:40].decode(errors='replace')!r}"
        return f"WebSocket {self.kind} {self.size} B" + (f" code {self.code}" if self.code is not None else "")

    def frame(self) -> bytes:
        """The message as one client frame (masked with a new key): what a replay of only some of a
        connection's messages sends. The app reads the same message."""
        from wsproto.frame_protocol import FrameProtocol

        fp = FrameProtocol(client=True, extensions=[])
        if self.kind == "close":
            return bytes(fp.close(self.code, self.payload.decode(errors="replace") or None))
        if self.kind in ("ping", "pong"):
            return bytes(getattr(fp, self.kind)(self.payload))
        return bytes(fp.send_data(self.payload.decode() if self.kind == "text" else self.payload, fin=True))


def _event(line: bytes) -> tuple[int, float, dict] | None:
    """One recording line as (connection, time, the line's object), or None for a line that is not
    one of asanlab's: a recording may come with a bundle from someone else, and a line of the wrong
    shape (wrong types, a time that is not a finite number) is skipped like a line cut short."""
    try:
        e = json.loads(line)
        if not isinstance(e, dict) or isinstance(e.get("c"), bool) or not isinstance(e.get("c"), int):
            return None
        t = float(e["t"])
        if not math.isfinite(t) or isinstance(e["t"], (bool, str)):
            return None
    except (ValueError, KeyError, TypeError, OverflowError):
        return None
    return e["c"], t, e


def _apply(conns: dict[int, Connection], c: int, t: float, e: dict) -> None:
    if "open" in e:
        conn = conns.setdefault(c, Connection(c, t))
        conn.opened, conn.peer = t, str(e["open"])
    elif "in" in e or "out" in e:
        payload = e.get("in") if "in" in e else e.get("out")
        if not isinstance(payload, str):
            return
        try:
            data = base64.b64decode(payload, validate=True)
        except ValueError:
            return
        conn = conns.setdefault(c, Connection(c, t))
        (conn.sent if "in" in e else conn.answered).append((t, data))
    elif "close" in e:
        conn = conns.setdefault(c, Connection(c, t))
        conn.closed_by, conn.closed = str(e["close"]), t


def read(path: Path) -> list[Connection]:
    """The connections of a recording, in the order they opened. Lines cut by an interruption are
    skipped: what was recorded before them stays."""
    conns: dict[int, Connection] = {}
    with untrusted.open_file(path, limit=RECORDING_LIMIT) as fh:
        for line in fh:
            event = _event(line)
            if event is not None:
                _apply(conns, *event)
    return sorted(conns.values(), key=lambda c: (c.opened, c.id))


def each_connection(path: Path) -> Iterator[Connection]:
    """The connections of a recording one at a time, in the order they opened, as read() gives
    them: a first pass notes where each connection's lines are, a second reads one connection's
    lines at a time. Memory: one connection's bytes and 8 bytes a line, not the recording (up to
    1 GiB) and its copies."""
    lines: dict[int, array] = {}
    opened: dict[int, float] = {}
    with untrusted.open_file(path, limit=RECORDING_LIMIT) as fh:
        at = 0
        for line in fh:
            event = _event(line)
            if event is not None:
                c, t, e = event
                lines.setdefault(c, array("q")).append(at)
                if "open" in e or c not in opened:
                    opened[c] = t
            at += len(line)
        for c in sorted(lines, key=lambda c: (opened[c], c)):
            conns: dict[int, Connection] = {}
            for offset in lines.pop(c):
                fh.seek(offset)
                event = _event(fh.readline())
                if event is not None:
                    _apply(conns, *event)
            yield from conns.values()


def requests_of(conn: Connection) -> list[HttpRequest]:
    """The HTTP/1.1 requests a connection carried, each with the app's status when it answered.
    Bytes that are not HTTP/1.1 end the list (say, a WebSocket after its upgrade)."""
    out: list[HttpRequest] = []
    server = h11.Connection(h11.SERVER)
    inbound = conn.inbound
    offset = 0  # bytes of the inbound stream taken by earlier requests
    given = 0  # bytes handed to h11 so far
    start_time: float | None = None
    current: dict | None = None
    for t, data in conn.sent:
        server.receive_data(data)
        given += len(data)
        while True:
            try:
                event = server.next_event()
            except h11.RemoteProtocolError:
                return _with_statuses(out, conn)
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                start_time = t if start_time is None else start_time
                current = {"method": event.method.decode("latin-1"), "target": event.target.decode("latin-1"),
                           "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
                           "body": [], "time": start_time}
            elif isinstance(event, h11.Data) and current is not None:
                current["body"].append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage) and current is not None:
                end = given - len(server.trailing_data[0])  # what h11 took; the rest is the next request's
                out.append(HttpRequest(conn.id, len(out), current["time"], current["method"], current["target"],
                                       current["headers"], b"".join(current["body"]), inbound[offset:end]))
                offset, current, start_time = end, None, None
                if server.our_state is not h11.SEND_RESPONSE:
                    return _with_statuses(out, conn)
                # h11 reads the next request only after a response: a stand-in, never sent anywhere.
                server.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                server.send(h11.EndOfMessage())
                if server.our_state is not h11.DONE or server.their_state is not h11.DONE:
                    return _with_statuses(out, conn)
                server.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return _with_statuses(out, conn)
    return _with_statuses(out, conn)


# The app's 101, and whether it accepted the client's offer of compressed messages.
SWITCHING_HEAD = re.compile(rb"HTTP/1\.1 101[^\r\n]*\r\n(.*?)\r\n\r\n", re.S)
DEFLATE_ACCEPTED = re.compile(rb"(?im)^sec-websocket-extensions:[^\r\n]*permessage-deflate")
# Closes wsproto itself makes of frames it cannot read (a reserved bit, bad UTF-8), not the client's.
UNREADABLE = (1002, 1007)


def deflated(conn: Connection) -> bool:
    """The app accepted permessage-deflate in its 101 (every browser offers it): the client's
    messages may be compressed, with one compression context across the connection."""
    head = SWITCHING_HEAD.search(b"".join(b for _, b in conn.answered))
    return head is not None and DEFLATE_ACCEPTED.search(head.group(1)) is not None


def ws_messages(conn: Connection) -> list[WsMessage]:
    """The client's WebSocket messages on an upgraded connection: its handshake and frames given to
    wsproto as the app's side, as they arrived, decompressed where the app accepted compression.
    Frames cut by the recording's end are not counted. [] when the frames cannot be read as
    messages: the connection is then kept or dropped whole."""
    import wsproto
    from wsproto import events as ws
    from wsproto.extensions import PerMessageDeflate

    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    try:
        server.receive_data(conn.requests[-1].raw)
        if not any(isinstance(e, ws.Request) for e in server.events()):
            return []
        server.send(ws.AcceptConnection(extensions=[PerMessageDeflate()] if deflated(conn) else []))
    # A client's handshake is whatever it sent: wsproto refuses a missing header with its own errors
    # and a non-ASCII one with UnicodeError. Either way these are not messages to list.
    except (wsproto.utilities.LocalProtocolError, wsproto.utilities.RemoteProtocolError, UnicodeError, ValueError):
        return []
    out: list[WsMessage] = []
    first = len(conn.requests)
    parts: list[bytes] = []  # a fragmented message's frames so far
    for t, data in conn.after_requests():
        try:
            server.receive_data(data)
            for e in server.events():
                if isinstance(e, ws.Message):
                    parts.append(e.data.encode() if isinstance(e, ws.TextMessage) else bytes(e.data))
                    if e.message_finished:
                        kind = "text" if isinstance(e, ws.TextMessage) else "binary"
                        out.append(WsMessage(conn.id, first + len(out), t, kind, b"".join(parts)))
                        parts = []
                elif isinstance(e, (ws.Ping, ws.Pong)):
                    out.append(WsMessage(conn.id, first + len(out), t, type(e).__name__.lower(), bytes(e.payload)))
                elif isinstance(e, ws.CloseConnection):
                    if e.code in UNREADABLE:
                        return []
                    out.append(WsMessage(conn.id, first + len(out), t, "close", (e.reason or "").encode(), e.code))
                    return out
        except (wsproto.utilities.RemoteProtocolError, wsproto.utilities.LocalProtocolError, UnicodeError, ValueError):
            return []  # not WebSocket after all
    return out


def _with_statuses(requests: list[HttpRequest], conn: Connection) -> list[HttpRequest]:
    """The app's answers, in order: HTTP/1.1 answers a connection's requests in the order sent. A
    101 to a WebSocket upgrade ends them: what follows is WebSocket."""
    client = h11.Connection(h11.CLIENT)
    answers = iter(conn.answered)
    statuses: list[int] = []
    for req in requests:  # the client side must have sent a request before it reads an answer
        try:
            # Bytes as they came (latin-1 round-trips every byte): h11 would encode text as ASCII.
            client.send(h11.Request(method=req.method.encode("latin-1"), target=(req.target or "/").encode("latin-1"),
                                    headers=[(b"host", b"x")] + [(k.encode("latin-1"), v.encode("latin-1"))
                                                                 for k, v in req.headers
                                                                 if k.lower() in ("connection", "upgrade")]))
            client.send(h11.EndOfMessage())
        except (h11.LocalProtocolError, UnicodeError):
            break
        answered = False
        while not answered:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:
                event = None
            if event is h11.NEED_DATA:
                chunk = next(answers, None)
                if chunk is None:
                    break
                client.receive_data(chunk[1])
                continue
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                statuses.append(101)  # switched: no more HTTP on this connection
                break
            if isinstance(event, h11.Response):
                statuses.append(event.status_code)
            elif isinstance(event, h11.EndOfMessage):
                answered = True
                if client.our_state is h11.DONE and client.their_state is h11.DONE:
                    client.start_next_cycle()
                else:
                    break
            elif event is None or isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                break
        if not answered:
            break
    for req, status in zip(requests, statuses):
        req.status = status
    return requests


def most_open_at_once(conns: list[Connection]) -> int:
    """The most connections that were open at the same time: above 1, a sequential replay is not
    what the app received. One closing as another opens is not at once."""
    closes: list[float] = []  # a heap: when the connections open so far close
    most = 0
    for c in sorted(conns, key=lambda c: c.opened):
        while closes and closes[0] <= c.opened:
            heapq.heappop(closes)
        heapq.heappush(closes, c.last)
        most = max(most, len(closes))
    return most


def all_requests(conns: list[Connection]) -> list[HttpRequest]:
    """Every request of the recording, by arrival time."""
    return sorted((r for c in conns for r in c.requests), key=lambda r: (r.time, r.connection, r.index))


def all_units(conns: list[Connection]) -> list[HttpRequest | WsMessage]:
    """What a minimization keeps or drops: every request and every WebSocket message, by time."""
    return sorted([r for c in conns for r in c.requests] + [m for c in conns for m in c.messages],
                  key=lambda r: (r.time, r.connection, r.index))


def kept(conn: Connection, keep: set[tuple[int, int]]) -> tuple[list[HttpRequest], list[tuple[float, bytes]]]:
    """A connection's requests in `keep` and the bytes to send after them, with when: its kept
    WebSocket messages, each as a frame, with the upgrade whenever one is kept (a message needs
    it); a WebSocket whose messages could not be read goes whole with its upgrade."""
    requests = [r for r in conn.requests if (conn.id, r.index) in keep]
    if not conn.upgraded:
        return requests, []
    upgrade = conn.requests[-1]
    if conn.messages:
        messages = [m for m in conn.messages if (conn.id, m.index) in keep]
        if messages and upgrade not in requests:
            requests.append(upgrade)
        return requests, [(m.time, m.frame()) for m in messages]
    return requests, conn.after_requests() if upgrade in requests else []


SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def write(path: Path, conns: list[Connection], keep: set[tuple[int, int]]) -> None:
    """A recording of only the requests and WebSocket messages in `keep` ((connection, index)),
    each connection's in their order and at their first times: what `reproduce --recording` replays.
    An upgrade kept is written with a 101, so that its messages are read as such again."""
    lines = []
    for conn in conns:
        requests, after = kept(conn, keep)
        if not requests:
            continue
        lines.append({"c": conn.id, "t": conn.opened, "open": conn.peer})
        for r in requests:
            lines.append({"c": conn.id, "t": r.time, "in": base64.b64encode(r.raw).decode()})
            if r.status == 101:
                lines.append({"c": conn.id, "t": r.time, "out": base64.b64encode(SWITCHED).decode()})
        lines += [{"c": conn.id, "t": t, "in": base64.b64encode(data).decode()} for t, data in after]
        lines.append({"c": conn.id, "t": max([r.time for r in requests] + [t for t, _ in after]), "close": "client"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines))
    tmp.replace(path)


def load(session_path: Path, recording: Path | None = None) -> list[Connection]:
    path = recording or session_path / "traffic" / FILE
    if recording is not None and not path.exists():
        raise UsageError(f"{recording}: no such recording")
    if not path.exists():
        raise UsageError(f"{session_path.name}: the session has no recorded traffic",
                         hint="record it with `asanlab run APP --record`")
    return read(path)
