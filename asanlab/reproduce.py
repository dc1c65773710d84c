"""`asanlab reproduce`: a recorded session's traffic sent again to a fresh container of its image,
several times, and for each finding how often it came back.

Each run is an ordinary `run` (its own session, kind "reproduce") with a companion that replays
the recording once the app accepts connections: the connections one after another in the order
they opened, and on each its requests byte for byte as the app received them, each sent after the
app answered the one before (as the client did), until the app closes the connection.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11

from . import session as sessions, traffic
from .errors import UsageError
from .events import Event, Reporter, null_reporter
from .findings import Finding, failing
from .run import Companion, DriverContext, RunOptions, run

READY_TIMEOUT = 60.0  # seconds for the fresh app to accept a connection
ANSWER_TIMEOUT = 10.0  # seconds of silence after which a connection's answer is given up


@dataclass
class Replayed:
    connections: int = 0
    requests: int = 0
    failed_connections: int = 0  # refused or reset: the app was not there, or died


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


@dataclass
class Outcome:
    runs: int
    seen: dict[str, int] = field(default_factory=dict)  # signature -> runs it came back in
    findings: dict[str, Finding] = field(default_factory=dict)  # signature -> one example
    original: list[str] = field(default_factory=list)  # the recorded session's failing signatures
    sessions: list[str] = field(default_factory=list)
    replayed: list[Replayed] = field(default_factory=list)

    def rate(self, signature: str) -> str:
        return f"{self.seen.get(signature, 0)} of {self.runs}"

    def to_dict(self) -> dict:
        return {"runs": self.runs, "sessions": self.sessions,
                "replayed": [vars(r) for r in self.replayed],
                "findings": [{"signature": sig, "id": f.id, "category": f.category, "kind": f.kind,
                              "came_back": self.seen.get(sig, 0), "in_original": sig in self.original}
                             for sig, f in self.findings.items()],
                "gone": [sig for sig in self.original if sig not in self.seen]}


def plan(ref: str, recording: Path | None = None) -> tuple[sessions.Session, list[traffic.Connection]]:
    """The session and its recording (or another, such as a minimized one); a clear error for a
    session that cannot be reproduced."""
    s = sessions.load(ref)
    conns = traffic.load(s.path, recording)
    if not any(c.sent for c in conns):
        raise UsageError(f"session {s.id}: its recording holds no request", hint="send traffic during `asanlab run --record`")
    if not Path(s.data.get("app") or "").is_file():
        raise UsageError(f"session {s.id}: its app {s.data.get('app')} is not there any more")
    return s, conns


@dataclass
class Target:
    """How one replay starts: the session's app, arguments and environment in an image."""

    client: object
    session: sessions.Session
    image: str
    image_id: str | None
    agent: str | None
    port: int
    env: list[str] = field(default_factory=list)
    grace: float = 15.0
    recipe: object | None = None
    reporter: Reporter = null_reporter

    def replay(self, conns: list[traffic.Connection], info: dict,
               keep: set[tuple[int, int]] | None = None) -> tuple[list[Finding], Replayed, str]:
        """One fresh container, the recording (or only the requests in `keep`) sent once: its failing
        findings, what was sent, and its session id."""
        s = self.session
        cport = (s.data.get("traffic") or {}).get("port") or "9501/tcp"
        base_env = [f"{k}={v}" for k, v in (s.data.get("user_env") or {}).items() if v != "***"]
        replay = Replay(conns, self.port, keep)
        opts = RunOptions(app=Path(s.data["app"]), image=self.image, image_id=self.image_id,
                          args=list(s.data.get("args") or []), ports=[f"127.0.0.1:{self.port}:{cport.split('/')[0]}"],
                          env=base_env + list(self.env), grace=self.grace, recipe=self.recipe, agent=self.agent,
                          companion=Companion(kind="reproduce", driver=replay, info={"reproduce": {"of": s.id, **info}}))
        result = run(self.client, opts, reporter=self.reporter)
        return failing(result.findings), replay.result, result.session.id


def reproduce(target: Target, conns: list[traffic.Connection], *, runs: int) -> Outcome:
    s, reporter = target.session, target.reporter
    original = [f.signature for f in failing(sessions.analyse(s)[1])]
    masked = [k for k, v in (s.data.get("user_env") or {}).items() if v == "***"]
    if masked:
        reporter(Event("reproduce.warning", f"{', '.join(masked)} were masked in the session: give them again with -e"))
    out = Outcome(runs=runs, original=original)
    for n in range(1, runs + 1):
        found, replayed, sid = target.replay(conns, {"run": n, "runs": runs})
        out.sessions.append(sid)
        out.replayed.append(replayed)
        for f in found:
            out.seen[f.signature] = out.seen.get(f.signature, 0) + 1
            out.findings.setdefault(f.signature, f)
        reporter(Event("reproduce.progress", f"run {n}/{runs}: {replayed.requests} request(s) replayed on "
                                             f"{replayed.connections} connection(s); {len(found)} finding(s)"))
    return out


def minimize(target: Target, conns: list[traffic.Connection], signature: str,
             tries: int = 1) -> list[traffic.HttpRequest]:
    """The fewest requests (each connection's kept in their order) whose replay still gives the
    finding `signature`: delta debugging (ddmin) over the recording's requests. A candidate keeps
    the finding when it comes back in any of up to `tries` replays (for a finding that comes back
    only some of the time); each candidate is judged once."""
    requests = traffic.all_requests(conns)
    tried: dict[frozenset, bool] = {}
    runs = 0

    def fails(subset: list[traffic.HttpRequest]) -> bool:
        nonlocal runs
        key = frozenset((r.connection, r.index) for r in subset)
        if key not in tried:
            tried[key] = False
            for _ in range(tries):
                runs += 1
                found, _, _ = target.replay(conns, {"minimize": runs}, keep=set(key))
                if any(f.signature == signature for f in found):
                    tried[key] = True
                    break
            target.reporter(Event("reproduce.minimize", f"try {len(tried)} ({runs} replays): {len(subset)} request(s): "
                                                        f"{'still there' if tried[key] else 'gone'}"))
        return tried[key]

    if not fails(requests):
        raise UsageError("the finding did not come back from the whole recording: nothing to shrink",
                         hint="see how often it comes back with `asanlab reproduce ID --runs 10`")
    items, n = requests, 2
    while len(items) >= 2:
        chunks = [items[i * len(items) // n:(i + 1) * len(items) // n] for i in range(n)]
        for chunk in chunks:
            if chunk and fails(chunk):
                items, n = chunk, 2
                break
        else:
            for chunk in chunks:
                rest = [r for r in items if r not in chunk]
                if rest and fails(rest):
                    items, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(items):
                    break
                n = min(len(items), n * 2)
    return items
