"""What a reproduction starts from: a recorded session, or a reproducer bundle written by
`reproduce --minimize` (bundle.py). Either gives the same `Source`: the app, its arguments and
environment, the port it listens on, the image and recipe, the recording, and the findings it
should bring back. Pure reading: no Docker."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import session as sessions
from .. import untrusted
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


def load(ref: str, recording: Path | None = None, app: Path | None = None) -> Source:
    """A session id ("latest", a session folder) or a reproducer bundle's folder."""
    path = Path(ref)
    if (path / BUNDLE_FILE).exists():
        return from_bundle(path, recording, app)
    if path.suffix in (".gz", ".tgz") and path.is_file():
        raise UsageError(f"{ref}: a bug-report archive; unpack it and give its reproducer/ folder",
                         hint=f"tar xzf {ref}")
    return from_session(ref, recording, app)


def from_session(ref: str, recording: Path | None = None, app: Path | None = None) -> Source:
    s = sessions.load(ref)
    conns = traffic.load(s.path, recording)
    d = s.data
    recipe_path = Path(d["recipe_path"]) if d.get("recipe_path") else None
    return _checked(Source(
        id=s.id, app=app or Path(d.get("app") or ""), args=list(d.get("args") or []), env=dict(d.get("user_env") or {}),
        port=(d.get("traffic") or {}).get("port") or "9501/tcp", image_id=(d.get("image") or {}).get("id"),
        image_refs=[r for r in [(d.get("image") or {}).get("ref")] if r], recipe_path=recipe_path,
        recipe=d.get("recipe"), conns=conns, expected=_failing(s), session=s, stacks=sessions.stacks_of(d),
        # Sessions from before asanlab kept the flag: their command starts with valgrind.
        valgrind=bool(d.get("valgrind")) or (d.get("command") or [""])[0] == "valgrind"))


def _failing(s: sessions.Session) -> list[Expected]:
    from ..reports.findings import failing

    return [Expected(f.signature, f.id, str(f.category), f.kind) for f in failing(sessions.reports_and_findings(s)[1])]


def from_bundle(folder: Path, recording: Path | None = None, app: Path | None = None) -> Source:
    """A reproducer bundle, read as the untrusted document it may be (someone else wrote it): its
    paths stay inside the folder, its fields have their types, or one error names what is wrong."""
    where = folder / BUNDLE_FILE
    try:
        meta = json.loads(untrusted.read_text(where, under=folder))
    except (OSError, ValueError) as e:
        raise UsageError(f"{where}: not a reproducer bundle ({e})") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{where}: not a reproducer bundle (not a JSON object)")
    if meta.get("format") != BUNDLE_FORMAT:
        raise UsageError(f"{where}: format {str(meta.get('format'))[:80]!r}; this asanlab reads {BUNDLE_FORMAT}")
    problem = _bundle_problem(meta)
    if problem:
        raise UsageError(f"{where}: {problem}")
    info = meta["app"]
    if app is not None:
        app_path = app
    elif info.get("copied"):
        app_path = folder / "app" / info["name"]
        if not untrusted.is_dir(folder / "app") or not untrusted.is_file(app_path):
            raise UsageError(f"{where}: its app app/{info['name']} is not a regular file in the bundle")
    else:
        # The bundle names a path on the machine that made it: mounting whatever a received file
        # names would hand a host folder to the app. The user says which file it is.
        raise UsageError(f"{where}: the bundle does not hold its app (it was too large to copy); it names "
                         f"{str(info.get('path'))[:200]!r} on the machine that made it",
                         hint="give the app with --app PATH")
    if recording is None:
        recording = folder / meta["recording"]
        if not untrusted.is_file(recording):
            raise UsageError(f"{where}: its recording {meta['recording']!r} is not a regular file in the bundle")
    elif not recording.is_file():
        raise UsageError(f"{recording}: no such recording")
    image = meta.get("image") or {}
    recipe_file = folder / "recipe.yml"
    return _checked(Source(
        id=str(folder), app=app_path, args=list(meta.get("args") or []), env=dict(meta.get("env") or {}),
        port=str(meta.get("port") or "9501/tcp"), image_id=image.get("id"), image_refs=list(image.get("refs") or []),
        recipe_path=recipe_file if untrusted.is_file(recipe_file) else None, recipe=meta.get("recipe"),
        conns=traffic.read(recording),
        expected=[Expected(f["signature"], f["id"], f["category"], f["kind"]) for f in meta.get("findings") or []],
        bundle=folder, stacks=sessions.stacks_of({"stacks": meta.get("stacks")}),
        concurrent=meta.get("replay") == "concurrent", valgrind=meta.get("valgrind") is True))


PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._ -]{0,254}")  # one file name: no folder, no '..'
PORT = re.compile(r"\d{1,5}/(tcp|udp)")


def _bundle_problem(meta: dict) -> str | None:
    """What is wrong with a bundle.json's fields, in one sentence, or None."""
    def strings(x) -> bool:
        return isinstance(x, list) and all(isinstance(v, str) for v in x)

    info = meta.get("app")
    if not isinstance(info, dict) or not isinstance(info.get("name"), str):
        return "field 'app' must be an object with a 'name'"
    if not PLAIN_NAME.fullmatch(info["name"]) or info["name"] in (".", ".."):
        return f"app name {info['name'][:80]!r} is not a plain file name (the app must be inside the bundle's app/)"
    if not isinstance(info.get("copied", False), bool) or not isinstance(info.get("path", ""), str):
        return "fields 'app.copied' and 'app.path' must be a boolean and a string"
    if not isinstance(meta.get("recording"), str) or not PLAIN_NAME.fullmatch(meta["recording"]):
        return "field 'recording' must be a file name inside the bundle"
    if not strings(meta.get("args", [])):
        return "field 'args' must be a list of strings"
    env = meta.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        return "field 'env' must be an object of strings"
    if any(not ENV_NAME.fullmatch(k) for k in env):
        return f"field 'env' has a name that is not a variable name: {next(k for k in env if not ENV_NAME.fullmatch(k))[:80]!r}"
    if meta.get("port") is not None and not (isinstance(meta["port"], str) and PORT.fullmatch(meta["port"])):
        return "field 'port' must be like \"9501/tcp\""
    image = meta.get("image") or {}
    if not isinstance(image, dict) or not isinstance(image.get("id") or "", str) or not strings(image.get("refs") or []):
        return "field 'image' must be an object with a string 'id' and a list of string 'refs'"
    if meta.get("recipe") is not None and not isinstance(meta["recipe"], dict):
        return "field 'recipe' must be an object"
    found = meta.get("findings") or []
    if not isinstance(found, list) or not all(
            isinstance(f, dict) and all(isinstance(f.get(k), str) for k in ("signature", "id", "category", "kind"))
            for f in found):
        return "field 'findings' must be a list of objects with string signature, id, category and kind"
    if meta.get("stacks") not in (None, "full", "fast"):
        return "field 'stacks' must be \"full\" or \"fast\""
    return None


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


def _checked(src: Source) -> Source:
    """A clear error for a source that cannot be replayed, before anything starts."""
    if not any(c.sent for c in src.conns):
        raise UsageError(f"{src.id}: its recording holds no request",
                         hint="send traffic during `asanlab run --record`")
    if not src.app.is_file():
        raise UsageError(f"{src.id}: its app {src.app} is not there any more")
    return src
