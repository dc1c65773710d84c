"""What a reproduction starts from: a recorded session, or a reproducer bundle written by
`reproduce --minimize` (bundle.py). Either gives the same `Source`: the app, its arguments and
environment, the port it listens on, the image and recipe, the recording, and the findings it
should bring back. Pure reading: no Docker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import session as sessions
from ..run import traffic
from ..errors import UsageError

BUNDLE_FILE = "bundle.json"  # marks a folder as a reproducer bundle
BUNDLE_FORMAT = "asanlab-reproducer/1"


@dataclass(frozen=True)
class Expected:
    """A finding the recording gave when it was made (or minimized)."""

    signature: str
    id: str
    category: str
    kind: str


@dataclass
class Source:
    id: str  # the session's id, or the bundle's folder
    app: Path
    args: list[str]
    env: dict[str, str]  # values "***" were masked when recorded
    port: str  # the container port the app listens on, "9501/tcp"
    image_id: str | None
    image_refs: list[str]  # tags it was known by, tried when the ID is not on this machine
    recipe_path: Path | None
    recipe: dict | None
    conns: list[traffic.Connection]
    expected: list[Expected] = field(default_factory=list)  # the failing findings
    session: sessions.Session | None = None  # None for a bundle
    bundle: Path | None = None
    # Allocation stacks unwound as when recorded (session.stacks_of): an FFI leak's signature is
    # its stack, and a replay must find the same one.
    stacks: str = "full"
    concurrent: bool = False  # a bundle minimized with connections replayed concurrently replays so
    valgrind: bool = False  # run under memcheck (`run --valgrind`): its replays are too

    @property
    def masked(self) -> list[str]:
        return [k for k, v in self.env.items() if v == "***"]

    @property
    def output_dir(self) -> Path:
        """Where a minimization writes its reproducer."""
        return (self.session.path if self.session is not None else self.bundle) / "reproducer"


def load(ref: str, recording: Path | None = None) -> Source:
    """A session id ("latest", a session folder) or a reproducer bundle's folder."""
    path = Path(ref)
    if (path / BUNDLE_FILE).is_file():
        return from_bundle(path, recording)
    if path.suffix in (".gz", ".tgz") and path.is_file():
        raise UsageError(f"{ref}: a bug-report archive; unpack it and give its reproducer/ folder",
                         hint=f"tar xzf {ref}")
    return from_session(ref, recording)


def from_session(ref: str, recording: Path | None = None) -> Source:
    s = sessions.load(ref)
    conns = traffic.load(s.path, recording)
    d = s.data
    recipe_path = Path(d["recipe_path"]) if d.get("recipe_path") else None
    return _checked(Source(
        id=s.id, app=Path(d.get("app") or ""), args=list(d.get("args") or []), env=dict(d.get("user_env") or {}),
        port=(d.get("traffic") or {}).get("port") or "9501/tcp", image_id=(d.get("image") or {}).get("id"),
        image_refs=[r for r in [(d.get("image") or {}).get("ref")] if r], recipe_path=recipe_path,
        recipe=d.get("recipe"), conns=conns, expected=_failing(s), session=s, stacks=sessions.stacks_of(d),
        # Sessions from before asanlab kept the flag: their command starts with valgrind.
        valgrind=bool(d.get("valgrind")) or (d.get("command") or [""])[0] == "valgrind"))


def _failing(s: sessions.Session) -> list[Expected]:
    from ..reports.findings import failing

    return [Expected(f.signature, f.id, str(f.category), f.kind) for f in failing(sessions.reports_and_findings(s)[1])]


def from_bundle(folder: Path, recording: Path | None = None) -> Source:
    try:
        meta = json.loads((folder / BUNDLE_FILE).read_text())
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        raise UsageError(f"{folder / BUNDLE_FILE}: not a reproducer bundle ({e})") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise UsageError(f"{folder / BUNDLE_FILE}: format {meta.get('format')!r}; this asanlab reads {BUNDLE_FORMAT}")
    try:
        app = folder / "app" / meta["app"]["name"] if meta["app"].get("copied") else Path(meta["app"]["path"])
        recording_path = recording or folder / meta["recording"]
        if not recording_path.is_file():
            raise UsageError(f"{recording_path}: no such recording")
        image = meta.get("image") or {}
        recipe_file = folder / "recipe.yml"
        return _checked(Source(
            id=str(folder), app=app, args=[str(a) for a in meta.get("args") or []],
            env={str(k): str(v) for k, v in (meta.get("env") or {}).items()}, port=str(meta.get("port") or "9501/tcp"),
            image_id=image.get("id"), image_refs=[str(r) for r in image.get("refs") or []],
            recipe_path=recipe_file if recipe_file.is_file() else None, recipe=meta.get("recipe"),
            conns=traffic.read(recording_path),
            expected=[Expected(f["signature"], f["id"], f["category"], f["kind"]) for f in meta.get("findings") or []],
            bundle=folder, stacks=sessions.stacks_of({"stacks": meta.get("stacks")}),
            concurrent=meta.get("replay") == "concurrent", valgrind=bool(meta.get("valgrind"))))
    except (KeyError, TypeError) as e:
        raise UsageError(f"{folder / BUNDLE_FILE}: missing or wrong field {e}") from None


def _checked(src: Source) -> Source:
    """A clear error for a source that cannot be replayed, before anything starts."""
    if not any(c.sent for c in src.conns):
        raise UsageError(f"{src.id}: its recording holds no request",
                         hint="send traffic during `asanlab run --record`")
    if not src.app.is_file():
        raise UsageError(f"{src.id}: its app {src.app} is not there any more")
    return src
