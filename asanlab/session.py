"""Sessions on disk: .asanlab/sessions/<id>/ with session.json, raw/ (verbatim logs), findings.json.

session.json is written when the run starts and rewritten atomically as it ends, so even a run
that was killed leaves a readable session.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, untrusted
from .errors import SessionError
from .reports.valgrind import is_valgrind_xml, parse_stream as parse_valgrind
from .reports.findings import Finding, cut_short, group
from .reports.notices import Notice, scan_notices
from .reports.sanitizers import Report, iter_parse_chunks, parse
from .untrusted import atomic_write
from .state import state_dir

SCHEMA = 1
SANITIZER_DIR = "raw/sanitizer"  # what the container's sanitizers write, one file per process
PHP_STACK_SUBDIR = "raw/php"  # the agent's PHP backtraces of those reports (asanlab/reports/php_stack.py)
CONTROL_SUBDIR = "control"  # what asanlab writes for the app to read (the soak's trigger): read-only in the container
OUTPUT_LOG = "raw/output.log"  # the app's stdout and stderr, verbatim
SYMBOLS = "symbols.json"  # frames resolved by `replay --symbolize`, reused by every later replay
LOG_LIMIT = untrusted.LOG_LIMIT
NOT_READ = ("something other than a sanitizer wrote into the log folder (the app can write there): asanlab "
            "reads only regular files of a bounded size there and follows no link")


def sessions_dir() -> Path:
    return state_dir() / "sessions"


def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Session:
    path: Path
    data: dict[str, Any]
    unsaved: str | None = None  # why its last save failed (a full disk), when it did

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def sanitizer_dir(self) -> Path:
        return self.path / SANITIZER_DIR

    @property
    def output_log(self) -> Path:
        return self.path / OUTPUT_LOG

    def save(self) -> None:
        atomic_write(self.path / "session.json", (json.dumps(self.data, indent=2, sort_keys=True) + "\n").encode())

    def save_findings(self, findings: list[Finding]) -> None:
        body = {"schema": SCHEMA, "asanlab_version": __version__, "findings": [f.to_dict() for f in findings]}
        atomic_write(self.path / "findings.json", (json.dumps(body, indent=2) + "\n").encode())


def create(info: dict[str, Any]) -> Session:
    sid = new_id()
    path = sessions_dir() / sid
    path.parent.mkdir(parents=True, exist_ok=True)
    # Only its owner enters it: the container writes below it as root, and what it leaves there (a
    # setuid-root program, say) must not be reachable by other users of the host.
    path.mkdir(mode=0o700)
    (path / SANITIZER_DIR).mkdir(parents=True)
    s = Session(path, {"schema": SCHEMA, "id": sid, "asanlab_version": __version__, "status": "running",
                       "started": now(), "ended": None, **info})
    s.save()
    return s


def load(ref: str) -> Session:
    base = sessions_dir()
    if ref == "latest":
        ids = list_ids()
        if not ids:
            raise SessionError(f"no sessions yet in {base}", hint="`asanlab run APP.php` records one")
        ref = ids[-1]
    if ref != Path(ref).name and not (Path(ref) / "session.json").exists():
        raise SessionError(f"no session {ref!r}: neither an id in {base} nor a session folder")
    path = Path(ref) if Path(ref).is_dir() and (Path(ref) / "session.json").exists() else base / ref
    try:
        data = json.loads(untrusted.read_text(path / "session.json", under=path))
    except FileNotFoundError:
        raise SessionError(f"no session {ref!r} in {base}", hint="`asanlab sessions` lists them") from None
    except ValueError as e:
        raise SessionError(f"{path / 'session.json'} is not readable JSON: {e}") from None
    except OSError as e:
        raise SessionError(f"{path / 'session.json'}: cannot read it: {e.strerror}") from None
    except untrusted.UntrustedFileError as e:
        raise SessionError(e.message) from None
    if not isinstance(data, dict) or not isinstance(data.get("schema", 0), int):
        raise SessionError(f"{path / 'session.json'} is not an asanlab session (not an object with a schema number)")
    if data.get("schema", 0) > SCHEMA:
        raise SessionError(f"session {ref} was written by a newer asanlab (schema {data['schema']})")
    data.setdefault("id", path.name)
    problem = check(data)
    if problem:
        raise SessionError(f"{path / 'session.json'}: {problem}")
    return Session(path, data)


# The fields asanlab reads from a session.json, with their types: a session someone sent is
# untrusted, and a field of another type must be one sentence here, not a traceback later.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "kind": (str,), "status": (str,), "stop_reason": (str, type(None)),
    "exit_code": (int, type(None)), "command": (list, type(None)), "args": (list, type(None)),
    "app": (str, type(None)), "image": (dict, type(None)), "recipe": (dict, type(None)),
    "recipe_path": (str, type(None)), "user_env": (dict, type(None)), "traffic": (dict, type(None)),
    "environment": (dict, type(None)), "ports": (dict, list, type(None)), "counts": (dict, type(None)),
    "abnormal_exits": (list, type(None)), "soak": (dict, type(None)), "stacks": (str, type(None)),
}
# A session id names a folder and the members of a bug-report archive: one plain name.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check(data: dict) -> str | None:
    """What is wrong with a session.json's fields, in one sentence, or None."""
    for key, types in FIELD_TYPES.items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, types) or isinstance(value, bool):
            names = " or ".join("null" if t is type(None) else {str: "a string", int: "a number", list: "a list",
                                                                   dict: "an object"}[t] for t in types)
            return f"field {key!r} must be {names}, not {type(value).__name__}"
    if not ID.fullmatch(data["id"]):
        return f"id {data['id'][:80]!r} is not a plain name (letters, digits, '.', '_', '-')"
    image = data.get("image") or {}
    for key in ("id", "ref"):
        if not isinstance(image.get(key, ""), (str, type(None))):
            return f"field 'image.{key}' must be a string"
    return None


def latest_of_image(image_id: str, ref: str) -> Session:
    """The most recent finished session run in this image (by image ID): an image as a baseline."""
    for sid in reversed(list_ids()):
        try:
            s = load(sid)
        except SessionError:
            continue
        if (s.data.get("image") or {}).get("id") == image_id and s.data.get("status") == "finished":
            return s
    raise SessionError(f"no finished session here was run in image {ref} ({image_id[:19]})",
                       hint="run the baseline once in that image, or give a session id or folder")


def list_ids() -> list[str]:
    base = sessions_dir()
    if not base.exists():
        return []
    return sorted(p.name for p in base.iterdir() if untrusted.is_dir(p) and untrusted.is_file(p / "session.json"))


def read_reports(folder: Path) -> list[Report]:
    """Parse every sanitizer log in a folder, in a stable order."""
    reports: list[Report] = []
    for f in untrusted.files(folder):
        try:
            found = list(read_file(f, f.name, limit=LOG_LIMIT))
        except (OSError, untrusted.UntrustedFileError):
            continue  # too large, or swapped since it was listed: said once by read_notices
        # UBSan's lines carry no pid: the log's name does (log_path's sanitizer.<pid>).
        pid = f.name.rpartition(".")[2]
        for r in found:
            if r.pid is None and pid.isascii() and pid.isdigit():
                r.pid = int(pid)
        reports += found
    return reports


def read_file(path: Path, source: str, limit: int | None = None):
    """The reports in one log file, streamed (valgrind's XML too). A link or a file that
    is not a regular one (a FIFO would never end) is refused with an error naming it."""
    with untrusted.open_file(path, limit=limit) as raw:
        fh = io.TextIOWrapper(raw, errors="replace")
        head = fh.read(2000)
        fh.seek(0)
        if is_valgrind_xml(head):
            raw.seek(0)
            yield from parse_valgrind(raw, source)
        else:
            yield from iter_parse_chunks(iter(lambda: fh.read(1 << 20), ""), source)


def read_notices(folders: list[Path]) -> list[Notice]:
    """What the sanitizers said about themselves (infrastructure problems), once per kind."""
    seen: dict[str, Notice] = {}
    for folder in folders:
        for path, why in untrusted.refused(folder, limit=LOG_LIMIT):
            seen.setdefault("not-read", Notice("not-read", f"{path.name}: not read ({why})", NOT_READ, str(path)))
        for f in untrusted.walk(folder) if folder.is_dir() else [folder]:
            try:
                with untrusted.open_file(f, limit=LOG_LIMIT) as raw:
                    for n in scan_notices(io.TextIOWrapper(raw, errors="replace"), f.name):
                        seen.setdefault(n.kind, n)
            except untrusted.UntrustedFileError as e:
                seen.setdefault("not-read", Notice("not-read", e.message, NOT_READ, str(f)))
            except OSError:
                continue
    return list(seen.values())


def session_notices(s: Session) -> list[Notice]:
    return read_notices([p for p in (s.sanitizer_dir, s.output_log) if untrusted.is_dir(p) or untrusted.is_file(p)])


def symbolize(s: Session, client) -> int:
    """Resolve the session's module+offset frames in its image; keep the answers beside the raw logs."""
    from .reports import symbolize as sym

    if not s.sanitizer_dir.is_dir() and not s.output_log.exists():
        # "0 findings" from logs that are not there would be a lie.
        raise SessionError(f"session {s.id}: its raw logs ({s.sanitizer_dir.parent}) are gone; nothing to re-read",
                           hint="a session copied without its raw/ folder cannot be replayed")
    reports = read_reports(s.sanitizer_dir)
    table = sym.load_cache(s.path / SYMBOLS)
    sym.apply(reports, table)
    need = sym.wanted(reports)
    if not need:
        return 0
    image_id = (s.data.get("image") or {}).get("id")
    if not image_id:
        raise SessionError(f"session {s.id} does not record its image: cannot symbolize")
    found = sym.resolve(client, image_id, need)
    table.update(found)
    atomic_write(s.path / SYMBOLS, sym.cache_body(table))
    return len(found)


def stacks_of(data: dict) -> str:
    """How a session's app unwound allocation stacks, "full" or "fast" (a leak's signature is its
    stack). Sessions from before asanlab kept it: `run`'s were full, a soak's fast unless --full-stacks."""
    if data.get("stacks") in ("full", "fast"):
        return data["stacks"]
    soak = data.get("soak")
    return "fast" if isinstance(soak, dict) and soak.get("full_stacks") is False else "full"


def reports_and_findings(s: Session) -> tuple[list[Report], list[Finding]]:
    from .reports import crash, php_stack
    from .reports.symbolize import apply, load_cache

    if not s.sanitizer_dir.is_dir() and not s.output_log.exists():
        # "0 findings" from logs that are not there would be a lie.
        raise SessionError(f"session {s.id}: its raw logs ({s.sanitizer_dir.parent}) are gone; nothing to re-read",
                           hint="a session copied without its raw/ folder cannot be replayed")
    reports = read_reports(s.sanitizer_dir)
    stacks = php_stack.read_folder(s.path / PHP_STACK_SUBDIR)
    reports += crash.read_folder(s.path / PHP_STACK_SUBDIR, stacks)  # signals no sanitizer handled
    apply(reports, load_cache(s.path / SYMBOLS))
    php_stack.attach(reports, stacks)
    origins = php_stack.read_origins(s.path / PHP_STACK_SUBDIR)
    # Leaks whose C stacks stop in a library are told apart by the PHP code that allocated them.
    reports = php_stack.split_by_origin(reports, origins, lambda r: cut_short(r.frames) is not None)
    php_stack.attach_origins(reports, origins)
    if s.output_log.exists():
        # UBSan may write to stderr when it runs before log_path applies; errors printed there count too.
        seen = {r.text for r in reports}
        reports += [r for r in read_file(s.output_log, "output.log", limit=LOG_LIMIT) if r.text not in seen]
    reports += crash.from_abnormal_exits(s.data.get("abnormal_exits") or [], reports)
    reports += crash.from_main_exit(s.data, reports)
    return reports, group(reports)
