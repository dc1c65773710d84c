"""`asanlab reproduce`: a recording sent again to fresh containers of an image, several times,
and for each finding how often it came back.

Each run is an ordinary `run` (its own session, kind "reproduce") with a companion that replays
the recording once the app accepts connections (replay.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..run import traffic
from ..events import Event, Reporter, null_reporter
from ..reports.findings import Finding, failing
from ..run import Companion, RunOptions, run
from .replay import Replay, Replayed
from .source import Source


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

    @property
    def not_this_app(self) -> bool:
        """Every answer that could be compared differed from the recorded one, in every run, and no
        recorded finding came back: the recording is of another app (or of another version of it)."""
        return bool(self.replayed) and all(r.compared >= 3 and len(r.differed) == r.compared for r in self.replayed) \
            and not any(sig in self.seen for sig in self.original)

    def to_dict(self) -> dict:
        return {"runs": self.runs, "sessions": self.sessions,
                "replayed": [r.to_dict() for r in self.replayed],
                "findings": [{"signature": sig, "id": f.id, "category": f.category, "kind": f.kind,
                              "came_back": self.seen.get(sig, 0), "in_original": sig in self.original}
                             for sig, f in self.findings.items()],
                "gone": [sig for sig in self.original if sig not in self.seen]}


@dataclass
class Target:
    """How one replay starts: the source's app, arguments and environment in an image."""

    client: object
    source: Source
    image: str
    image_id: str | None
    agent: str | None
    port: int
    env: list[str] = field(default_factory=list)
    grace: float = 15.0
    recipe: object | None = None
    reporter: Reporter = null_reporter
    concurrent: bool = False  # connections overlap as recorded (replay.py)
    crash_handler: object | None = None  # image/crash_handler.Handler, for an image without the agent

    def replay(self, conns: list[traffic.Connection], info: dict,
               keep: set[tuple[int, int]] | None = None) -> tuple[list[Finding], Replayed, str]:
        """One fresh container, the recording (or only the requests in `keep`) sent once: its failing
        findings, what was sent, and its session id."""
        src = self.source
        base_env = [f"{k}={v}" for k, v in src.env.items() if v != "***"]
        replay = Replay(conns, self.port, keep, concurrent=self.concurrent)
        opts = RunOptions(app=src.app, image=self.image, image_id=self.image_id, args=list(src.args),
                          ports=[f"127.0.0.1:{self.port}:{src.port.split('/')[0]}"],
                          env=base_env + list(self.env), grace=self.grace, recipe=self.recipe, agent=self.agent,
                          crash_handler=self.crash_handler,
                          full_stacks=src.stacks == "full" or self.agent is None, valgrind=src.valgrind,
                          companion=Companion(kind="reproduce", driver=replay, info={"reproduce": {"of": src.id, **info}}))
        result = run(self.client, opts, reporter=self.reporter)
        return failing(result.findings), replay.result, result.session.id


def reproduce(target: Target, *, runs: int) -> Outcome:
    src, reporter = target.source, target.reporter
    if src.masked:
        reporter(Event("reproduce.warning", f"{', '.join(src.masked)} were masked when recorded: give them again with -e"))
    out = Outcome(runs=runs, original=[e.signature for e in src.expected])
    for n in range(1, runs + 1):
        found, replayed, sid = target.replay(src.conns, {"run": n, "runs": runs})
        out.sessions.append(sid)
        out.replayed.append(replayed)
        for f in found:
            out.seen[f.signature] = out.seen.get(f.signature, 0) + 1
            out.findings.setdefault(f.signature, f)
        died = f"; no answer to {', '.join(replayed.unanswered[:3])}" if replayed.unanswered else ""
        ws = f" ({replayed.websocket_connections} WebSocket)" if replayed.websocket_connections else ""
        if replayed.differed:
            died += f"; {len(replayed.differed)} of {replayed.compared} answer(s) unlike the recording"
        reporter(Event("reproduce.progress", f"run {n}/{runs}: {replayed.requests} request(s) replayed on "
                                             f"{replayed.connections} connection(s){ws}; {len(found)} finding(s){died}"))
    return out
