"""One replay of a recording against a running app. On each connection its requests go byte for
byte as the app received them, each sent after the app answered the one before (as the client
did), until the app closes the connection. Sequential (the default): the connections one after
another in the order they opened, so each replay is the same. Concurrent: each connection opens at
its recorded time (counted from the first one kept) and sends each request at its recorded time or
after the answer before it, whichever is later, so connections overlap as they did when recorded
(a bug that needs two requests in flight at once). The request that got no answer (the one a
worker died on) is kept."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11

from ..run import traffic
from ..events import Event
from ..reports.crash import ABNORMAL_EXIT
from ..run import DriverContext

READY_TIMEOUT = 60.0  # seconds for the fresh app to accept a connection
ANSWER_TIMEOUT = 10.0  # seconds of silence after which a connection's answer is given up
FRAME_GAP_CAP = 1.0  # seconds: a replay one connection after another does not wait out a WebSocket's idle time
GAP_CAP = 60.0  # seconds: the longest quiet time a concurrent replay keeps (a timer's bug keeps its timing)
DRAIN_IDLE = 1.0  # seconds of the app's silence after a WebSocket's last frame: it has handled them
# A request a worker died on gets no answer in Swoole's process mode: the master keeps the connection
# open and silent. Once the manager has logged a process's `abnormal exit` since the request was
# sent, the answer is given up after this much more silence, not after ANSWER_TIMEOUT.
DEATH_GRACE = 2.0
POLL = 0.25  # seconds between looks at the app's output while an answer is awaited


def schedule(times: list[float], gap_cap: float | None = None) -> dict[float, float]:
    """Recorded time -> seconds after the replay starts: the recorded order and gaps, each gap cut
    to gap_cap. A recording's times may be anything (a bundle from elsewhere, hand-edited): a gap
    of years would hang the replay, and one past what a wait can take would end its thread."""
    gap_cap = GAP_CAP if gap_cap is None else gap_cap
    out: dict[float, float] = {}
    previous, at = None, 0.0
    for t in sorted(set(times)):
        if previous is not None:
            at += min(t - previous, gap_cap)
        out[t], previous = at, t
    return out


@dataclass
class Replayed:
    connections: int = 0
    requests: int = 0
    failed_connections: int = 0  # refused or reset: the app was not there, or died
    unanswered: list[str] = field(default_factory=list)  # "GET /fire (connection 3 #1)": no answer came
    concurrent: bool = False
    websocket_connections: int = 0  # upgraded (101), their frames sent
    compared: int = 0  # answers whose status can be set beside the recorded one
    differed: list[str] = field(default_factory=list)  # "GET /a (connection 3 #0): 200 recorded, 404 now"

    def to_dict(self) -> dict:
        return {"connections": self.connections, "requests": self.requests, "concurrent": self.concurrent,
                "websocket_connections": self.websocket_connections, "compared": self.compared,
                "differed": self.differed,
                "failed_connections": self.failed_connections, "unanswered": self.unanswered}


class Replay:
    """The companion's driver: sends the recording once, then returns (which stops the app)."""

    def __init__(self, conns: list[traffic.Connection], port: int, keep: set[tuple[int, int]] | None = None,
                 concurrent: bool = False):
        self.conns, self.port = conns, port
        self.keep = keep  # (connection, index) of the requests to send; None: all, and any bytes after them
        self.concurrent = concurrent
        self.result = Replayed(concurrent=concurrent)
        self._lock = threading.Lock()  # the result, when connections run in threads

    def __call__(self, ctx: DriverContext) -> None:
        if not self._wait_ready(ctx):
            return
        plan = []
        for conn in self.conns:
            # All of it byte for byte, or a candidate's requests and WebSocket messages.
            requests, rest = (conn.requests, conn.after_requests()) if self.keep is None else \
                traffic.kept(conn, self.keep)
            if requests or rest:
                # A candidate of a minimization opens each connection just before its first kept
                # request: the dropped requests' time is not waited for.
                opens = requests[0].time if self.keep is not None and requests else conn.opened
                plan.append((opens, requests, rest))
        if not self.concurrent:
            for _, requests, rest in plan:
                if ctx.stop.is_set():
                    return
                self._connection(ctx, requests, rest)
            return
        if not plan:
            return
        started = time.monotonic()
        offsets = schedule([opens for opens, _, _ in plan] + [r.time for _, requests, _ in plan for r in requests]
                           + [t for _, _, rest in plan for t, _ in rest])

        def at(t: float) -> bool:
            """Wait until recorded time t (its offset in the schedule); False: stopped."""
            return not ctx.stop.wait(max(0.0, started + offsets.get(t, 0.0) - time.monotonic()))

        def opened_on_time(opens: float, requests: list[traffic.HttpRequest], rest: list[tuple[float, bytes]]) -> None:
            if at(opens):
                self._connection(ctx, requests, rest, at)

        threads = [threading.Thread(target=opened_on_time, args=job, name="asanlab-replay", daemon=True)
                   for job in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _connection(self, ctx: DriverContext, requests: list[traffic.HttpRequest], rest: list[tuple[float, bytes]],
                    at=None) -> None:
        """One connection's requests, then the bytes past them (a WebSocket's frames) at their
        recorded times (`at`), or, one connection after another, at their recorded gaps up to
        FRAME_GAP_CAP."""
        with self._lock:
            self.result.connections += 1
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_TIMEOUT) as sock:
                answers = _Answers(sock, _Deaths(ctx.session.output_log if ctx.session is not None else None))
                # As the client did: one request, its answer, the next (pipelining changes timing).
                for r in requests:
                    if (at is not None and not at(r.time)) or ctx.stop.is_set():
                        return
                    sock.sendall(r.raw)
                    with self._lock:
                        self.result.requests += 1
                    if not answers.read_one(r):
                        with self._lock:
                            self.result.unanswered.append(f"{r.line} (connection {r.connection} #{r.index})")
                        return
                    if r.status is not None:
                        with self._lock:
                            self.result.compared += 1
                            if answers.status != r.status:
                                self.result.differed.append(f"{r.line} (connection {r.connection} #{r.index}): "
                                                            f"{r.status} recorded, {answers.status} now")
                    if answers.switched:
                        break
                previous = rest[0][0] if rest else 0.0
                for t, data in rest:
                    waited = at(t) if at is not None else not ctx.stop.wait(min(max(0.0, t - previous), FRAME_GAP_CAP))
                    if not waited:
                        return
                    previous = t
                    sock.sendall(data)
                if answers.switched:
                    with self._lock:
                        self.result.websocket_connections += 1
                    answers.drain()  # the app handles the messages before the replay goes on (or stops it)
        except OSError:
            with self._lock:
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


class _Deaths:
    """Whether a process of the app died since a mark: Swoole's manager logs each one's `abnormal
    exit` in the app's output (session output.log)."""

    def __init__(self, log: Path | None):
        self.log, self.offset = log, 0

    def mark(self) -> None:
        try:
            self.offset = self.log.stat().st_size if self.log is not None else 0
        except OSError:
            self.offset = 0

    def since_mark(self) -> bool:
        if self.log is None:
            return False
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                new = f.read().decode(errors="replace")
        except OSError:
            return False
        return ABNORMAL_EXIT.search(new) is not None


class _Answers:
    """The app's answers on one connection, read one at a time (h11); a 101 to a WebSocket upgrade
    switches the connection, after which the app's bytes are only drained."""

    def __init__(self, sock: socket.socket, deaths: _Deaths | None = None):
        self.sock = sock
        self.deaths = deaths or _Deaths(None)
        self.client = h11.Connection(h11.CLIENT)
        self.switched = False
        self.status: int | None = None  # of the last answer read

    def read_one(self, request: traffic.HttpRequest) -> bool:
        """Read the answer to this request; False when the app closed or went silent."""
        try:
            # A stand-in of the request for h11 (the real bytes went to the app): its method, and a
            # WebSocket's upgrade headers, without which h11 would refuse a 101. Nothing else: a
            # `Connection: close` would make h11 refuse the next request on a connection that the
            # app kept open.
            upgrade = any(k == "upgrade" for k, _ in request.headers)
            self.client.send(h11.Request(method=request.method, target="/", headers=[("host", "x")] + [
                (k, v) for k, v in request.headers if upgrade and k in ("connection", "upgrade")]))
            self.client.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return False
        self.deaths.mark()
        while True:
            try:
                event = self.client.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA:
                chunk = self._receive()
                if not chunk:
                    return False
                self.client.receive_data(chunk)
                continue
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                self.switched, self.status = True, 101
                return True
            if isinstance(event, h11.Response):
                self.status = event.status_code
            if isinstance(event, h11.EndOfMessage):
                if self.client.our_state is not h11.DONE or self.client.their_state is not h11.DONE:
                    return False
                self.client.start_next_cycle()
                return True
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return False

    def _receive(self) -> bytes:
        """The app's next bytes; b"" when it closed, reset, stayed silent for ANSWER_TIMEOUT, or for
        DEATH_GRACE after a process of it died."""
        silent, since_death = 0.0, None
        self.sock.settimeout(POLL)
        try:
            while True:
                try:
                    return self.sock.recv(65536)
                except socket.timeout:
                    silent += POLL
                if silent >= ANSWER_TIMEOUT:
                    return b""
                if since_death is None and self.deaths.since_mark():
                    since_death = silent
                if since_death is not None and silent - since_death >= DEATH_GRACE:
                    return b""
        except OSError:
            return b""
        finally:
            self.sock.settimeout(ANSWER_TIMEOUT)

    def drain(self) -> None:
        """Read what the app sends until it closes, goes quiet for DRAIN_IDLE, or ANSWER_TIMEOUT passes."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        self.sock.settimeout(DRAIN_IDLE)
        try:
            while time.monotonic() < deadline and self.sock.recv(65536):
                pass
        except OSError:
            pass  # quiet (a timeout) or reset: either way the app had its turn
