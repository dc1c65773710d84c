"""One replay of a recording against a running app: the connections one after another in the
order they opened, and on each its requests byte for byte as the app received them, each sent
after the app answered the one before (as the client did), until the app closes the connection.
The request that got no answer (the one a worker died on) is kept."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import h11

from ..run import traffic
from ..events import Event
from ..run import DriverContext

READY_TIMEOUT = 60.0  # seconds for the fresh app to accept a connection
ANSWER_TIMEOUT = 10.0  # seconds of silence after which a connection's answer is given up


@dataclass
class Replayed:
    connections: int = 0
    requests: int = 0
    failed_connections: int = 0  # refused or reset: the app was not there, or died
    unanswered: list[str] = field(default_factory=list)  # "GET /fire (connection 3 #1)": no answer came

    def to_dict(self) -> dict:
        return {"connections": self.connections, "requests": self.requests,
                "failed_connections": self.failed_connections, "unanswered": self.unanswered}


class Replay:
    """The companion's driver: sends the recording once, then returns (which stops the app)."""

    def __init__(self, conns: list[traffic.Connection], port: int, keep: set[tuple[int, int]] | None = None):
        self.conns, self.port = conns, port
        self.keep = keep  # (connection, index) of the requests to send; None: all, and any bytes after them
        self.result = Replayed()

    def __call__(self, ctx: DriverContext) -> None:
        if not self._wait_ready(ctx):
            return
        for conn in self.conns:
            if ctx.stop.is_set():
                return
            requests = conn.requests
            rest = conn.inbound[sum(len(r.raw) for r in requests):]  # bytes after the last request (or not HTTP)
            if self.keep is not None:
                requests = [r for r in requests if (conn.id, r.index) in self.keep]
                rest = b""
            if not requests and not rest:
                continue
            self.result.connections += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_TIMEOUT) as sock:
                    answers = _Answers(sock)
                    # As the client did: one request, its answer, the next (pipelining changes timing).
                    for r in requests:
                        sock.sendall(r.raw)
                        self.result.requests += 1
                        if not answers.read_one(r.method):
                            self.result.unanswered.append(f"{r.line} (connection {r.connection} #{r.index})")
                            break
                    else:
                        if rest:
                            sock.sendall(rest)
            except OSError:
                self.result.failed_connections += 1

    def _wait_ready(self, ctx: DriverContext) -> bool:
        """Until the app itself accepts a connection. Docker's proxy accepts on the published port
        at once and closes the connection when the app is not listening yet: a connection that
        stays open is the app's. Nothing is sent: the app sees only the recording."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not ctx.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.settimeout(0.5)
                    try:
                        if sock.recv(1) == b"":
                            raise ConnectionResetError
                    except socket.timeout:
                        return True  # still open after half a second: the app holds it
            except OSError:
                pass
            time.sleep(0.2)
        ctx.reporter(Event("reproduce.warning", f"the app did not accept a connection within {READY_TIMEOUT:.0f} s"))
        return False


class _Answers:
    """The app's answers on one connection, read one at a time (h11)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.client = h11.Connection(h11.CLIENT)

    def read_one(self, method: str) -> bool:
        """Read the answer to a request of this method; False when the app closed or went silent."""
        try:
            self.client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
            self.client.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return False
        while True:
            try:
                event = self.client.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA:
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    return False
                if not chunk:
                    return False
                self.client.receive_data(chunk)
                continue
            if isinstance(event, h11.EndOfMessage):
                if self.client.our_state is not h11.DONE or self.client.their_state is not h11.DONE:
                    return False
                self.client.start_next_cycle()
                return True
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return False


