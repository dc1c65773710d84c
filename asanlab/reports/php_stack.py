"""The PHP side of sanitizer reports: what asanlab's agent wrote when ASan reported an error.

The agent (images/agent) appends one block per ASan error to php-backtrace.<pid>:

    report ==8==ERROR: AddressSanitizer: attempting double-free on 0x602000000010 in thread T0:
    frame free\t\t0
    frame {closure}\t/app/server.php\t11
    request GET /crash
    coroutine 5
    end

The report line is the ERROR line of the report, verbatim (it holds the PID and the address), so
each block is matched to its report whatever order the files are read in.

A LeakSanitizer leak is reported at exit, when the PHP code that made it has long returned: for
those, the agent's php-origin.<pid> gives the PHP call path that allocated each block still alive at
exit, and LeakSanitizer lists the leaked objects' addresses (report_objects=1); attach_origins joins
the two. The agent's other files (php-heap.<pid>, php-census.<pid>) are read here too. Pure: no Docker.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import untrusted
from ..layout import APP_DIR

FILE_PREFIX = "php-backtrace."
LINE_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII only: int() would take other scripts' digits
COUNT = re.compile(r"[0-9]{1,18}")
MAX_FILE_BYTES = 64 << 20  # a crash loop cannot make asanlab read without end


@dataclass(frozen=True)
class PhpFrame:
    function: str
    file: str | None = None  # None for internal functions (C code: PHP's own, an extension, FFI)
    line: int | None = None

    def __str__(self) -> str:
        name = self.function if self.function == "{main}" else f"{self.function}()"
        return f"{name} {self.file}:{self.line}" if self.file else name


@dataclass
class PhpStack:
    frames: list[PhpFrame] = field(default_factory=list)  # innermost first
    # "GET /path" when a Swoole HTTP handler was serving one; "WebSocket message on connection 3,
    # 4 byte(s): "fire"" for a WebSocket message handler.
    request: str | None = None
    coroutine: int | None = None  # Swoole's coroutine id when the error happened in a coroutine
    # For a leak: the PHP code that allocated it (not the code running at the report), and how many
    # of the leak's listed objects it allocated, of how many.
    allocated_objects: int | None = None
    listed_objects: int | None = None

    @property
    def label(self) -> str:
        """How the frames relate to the report: running when it was reported, or allocating a leak."""
        return "in PHP" if self.allocated_objects is None else "allocated in PHP"

    def app_frame(self) -> PhpFrame | None:
        """The innermost frame in the app's own code (the folder mounted at /app)."""
        return next((f for f in self.frames if f.file and f.file.startswith(APP_DIR + "/")), None)

    def path(self, limit: int = 4) -> str:
        """The innermost app frame and the calls above it: `remember() /app/x.php:15 <- {closure} ...`."""
        start = next((i for i, f in enumerate(self.frames) if f.file and f.file.startswith(APP_DIR + "/")), 0)
        return " <- ".join(str(f) for f in self.frames[start:start + limit])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PhpStack":
        return cls([PhpFrame(**f) for f in d.get("frames", [])], d.get("request"), d.get("coroutine"),
                   d.get("allocated_objects"), d.get("listed_objects"))


def _frame(rest: str) -> PhpFrame | None:
    """`function<TAB>file<TAB>line`, the agent's frame line after its first word."""
    parts = rest.split("\t")
    if len(parts) != 3 or not parts[0]:
        return None
    file = parts[1] or None
    return PhpFrame(parts[0], file, int(parts[2]) if file and LINE_NUMBER.fullmatch(parts[2]) else None)


def parse(text: str) -> dict[str, PhpStack]:
    """Blocks by their report line. A block cut short (the process died while writing) keeps what
    it has; lines that are not the agent's are ignored."""
    stacks: dict[str, PhpStack] = {}
    current: PhpStack | None = None
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "report":
            current = stacks.setdefault(rest.strip(), PhpStack())
        elif current is None:
            continue
        elif word == "frame":
            frame = _frame(rest)
            if frame is not None:
                current.frames.append(frame)
        elif word == "request" and rest.strip():
            current.request = rest.strip()
        elif word == "coroutine" and LINE_NUMBER.fullmatch(rest.strip()):
            current.coroutine = int(rest.strip())
        elif word == "end":
            current = None
    return stacks


def read_folder(folder: Path) -> dict[str, PhpStack]:
    stacks: dict[str, PhpStack] = {}
    for _, text in untrusted.texts(folder, prefix=FILE_PREFIX, limit=MAX_FILE_BYTES):
        stacks.update(parse(text))
    return stacks


def attach(reports, stacks: dict[str, PhpStack]) -> int:
    """Give each report its PHP stack, found by the report's ERROR line; a UBSan report (which has
    none, and ends its process: asanlab builds UBSan without recovery) gets the stack its process
    wrote as it died ("death <pid>", the pid from its log's name). Returns how many matched."""
    if not stacks:
        return 0
    matched = 0
    for r in reports:
        key = next((ln.strip() for ln in r.text.splitlines() if "ERROR: " in ln), None)
        if key is None and r.is_undefined:
            pid = r.pid if r.pid is not None else _pid_of(r.source)
            key = f"death {pid}" if pid is not None else None
        if key is not None and key in stacks:
            r.php = stacks[key]
            matched += 1
    return matched


def _pid_of(source: str) -> int | None:
    """sanitizer.<pid>, the sanitizers' log_path naming."""
    m = re.fullmatch(r"[\w.-]*?\.(\d+)", source.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


ORIGIN_PREFIX = "php-origin."
ADDRESS = re.compile(r"0x[0-9a-f]{1,16}")


def parse_origins(text: str) -> dict[int, tuple[PhpFrame, ...]]:
    """The agent's php-origin.<pid> (images/agent/php-origin.c): each block alive at the process's
    exit -> the PHP call path that allocated it, innermost first; () for a block allocated while no
    PHP code ran (a site with no frame lines).

        origin <pid> <blocks> <not recorded>
        site <id>
        frame <function>\t<file>\t<line>
        block <address> <site id>
        end

    A dump cut short keeps the blocks it has: each block line stands alone."""
    blocks: dict[int, tuple[PhpFrame, ...]] = {}
    sites: dict[str, list[PhpFrame]] = {}
    current: list[PhpFrame] | None = None
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "origin":
            sites, current = {}, None  # a later process with the same PID: its own site numbers
        elif word == "site" and COUNT.fullmatch(rest.strip()):
            current = sites.setdefault(rest.strip(), [])
        elif word == "frame" and current is not None:
            frame = _frame(rest)
            if frame is not None:
                current.append(frame)
        elif word == "block":
            current = None
            fields = rest.split()
            if len(fields) == 2 and ADDRESS.fullmatch(fields[0]) and fields[1] in sites:
                blocks[int(fields[0], 16)] = tuple(sites[fields[1]])
    return blocks


def read_origins(folder: Path) -> dict[int, dict[int, tuple[PhpFrame, ...]]]:
    """PID -> (address -> PHP call path), from every php-origin.<pid> in the folder."""
    out: dict[int, dict[int, tuple[PhpFrame, ...]]] = {}
    for f, text in untrusted.texts(folder, prefix=ORIGIN_PREFIX, limit=MAX_FILE_BYTES):
        pid = f.name[len(ORIGIN_PREFIX):]
        if COUNT.fullmatch(pid):
            out[int(pid)] = parse_origins(text)
    return out


def origin_bookkeeping(folder: Path) -> list[dict]:
    """What the agent's origin table held in each process at exit against that process's live heap
    at its largest (sampled by the agent; the `origin` line's last two fields, which an older
    agent's line lacks)."""
    out = []
    for _, text in untrusted.texts(folder, prefix=ORIGIN_PREFIX, limit=MAX_FILE_BYTES):
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 6 and fields[0] == "origin" and all(COUNT.fullmatch(x) for x in fields[1:]):
                pid, _, _, kept, heap = map(int, fields[1:])
                out.append({"pid": pid, "kept_bytes": kept, "live_heap": heap,
                            "share": kept / heap if heap else None})
    return out


def split_by_origin(reports: list, origins: dict[int, dict[int, tuple[PhpFrame, ...]]], when) -> list:
    """A leak whose objects several PHP call paths allocated, as one leak per path, where `when(report)`
    says its C stack cannot tell them apart (one cut short by the fast unwinder: LeakSanitizer groups
    leaks by stack, and every FFI call's stack is the same two frames). Objects allocated while no PHP
    code ran, or not recorded, stay with the path that allocated most. Only a leak whose every object
    is listed with its size is split: bytes and counts stay exact."""
    out = []
    for r in reports:
        blocks = origins.get(r.pid) if r.pid is not None else None
        if not blocks or not r.is_leak or len(r.objects) != r.leaked_objects or \
                len(r.object_bytes) != len(r.objects) or not when(r):
            out.append(r)
            continue
        by_path: dict[tuple[PhpFrame, ...], list[int]] = {}
        for n, a in enumerate(r.objects):
            by_path.setdefault(blocks.get(int(a, 16)) or (), []).append(n)
        named = sorted((p for p in by_path if p), key=lambda p: (-len(by_path[p]), not _app_first(p)))
        if len(named) < 2:
            out.append(r)
            continue
        by_path[named[0]] += by_path.pop((), [])
        for p in named:
            keep = sorted(by_path[p])
            out.append(replace(r, objects=[r.objects[n] for n in keep], object_bytes=[r.object_bytes[n] for n in keep],
                               leaked_objects=len(keep), leaked_bytes=sum(r.object_bytes[n] for n in keep)))
    return out


def attach_origins(reports, origins: dict[int, dict[int, tuple[PhpFrame, ...]]]) -> int:
    """Give each leak the PHP code that allocated most of its listed objects, and count those the
    agent saw allocated while no PHP code ran (the path with no frame). Returns how many got a PHP path."""
    named = 0
    for r in reports:
        blocks = origins.get(r.pid) if r.pid is not None else None
        if not blocks or not r.objects:
            continue
        paths = Counter(p for p in (blocks.get(int(a, 16)) for a in r.objects) if p is not None)
        outside = paths.pop((), 0)
        if outside:
            r.allocated_outside_php = outside
        if not paths:
            continue
        path, count = max(paths.items(), key=lambda kv: (kv[1], _app_first(kv[0])))
        r.php = PhpStack(list(path), allocated_objects=count, listed_objects=len(r.objects))
        named += 1
    return named


def _app_first(path: tuple[PhpFrame, ...]) -> bool:
    """Between two call paths that allocated as many objects, the one in the app's code wins."""
    return any(f.file and f.file.startswith(APP_DIR + "/") for f in path)


@dataclass
class HeapSite:
    """Live heap the agent estimates for one PHP call path (from sampled allocations)."""

    frames: list[PhpFrame]
    bytes: float
    blocks: float

    def key(self) -> str:
        return " < ".join(str(f) for f in self.frames)


def parse_heap(text: str) -> list[tuple[int, list[HeapSite]]]:
    """The agent's php-heap.<pid>: one (sequence number, sites) per profile it answered. A block
    cut short is dropped: its sites would read as freed."""
    out: list[tuple[int, list[HeapSite]]] = []
    seq: int | None = None
    sites: list[HeapSite] = []
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        fields = rest.split()
        if word == "heap" and fields and LINE_NUMBER.fullmatch(fields[0]):
            seq, sites = int(fields[0]), []
        elif seq is None:
            continue
        elif word == "site" and len(fields) == 2:
            try:
                sites.append(HeapSite([], float(fields[0]), float(fields[1])))
            except ValueError:
                continue
        elif word == "frame" and sites:
            frame = _frame(rest)
            if frame is not None:
                sites[-1].frames.append(frame)
        elif word == "end":
            out.append((seq, sites))
            seq = None
    return out


def parse_heap_bookkeeping(text: str) -> list[tuple[int, int]]:
    """(sequence number, bytes) per profile in the agent's php-heap.<pid>: what its sampler kept in
    memory then (the fifth field of each `heap` line; agents before it wrote four)."""
    out: list[tuple[int, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] == "heap" and COUNT.fullmatch(fields[1]) and COUNT.fullmatch(fields[5]):
            out.append((int(fields[1]), int(fields[5])))
    return out


@dataclass(frozen=True)
class Holder:
    """One root of the PHP heap in a census: a global, a static property, a function's static
    variable, or a member of one (`$app->cache`, `$config['routes']`)."""

    kind: str  # global, static-property, static-var
    path: str
    elements: int
    bytes: int


def parse_census(text: str) -> list[tuple[int, list[Holder]]]:
    """The agent's php-census.<pid>: one (sequence number, holders) per census. A census cut short
    (the process died while writing it) is dropped: its missing holders would read as emptied."""
    out: list[tuple[int, list[Holder]]] = []
    seq: int | None = None
    holders: list[Holder] = []
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "census" and COUNT.fullmatch(rest.strip()):
            seq, holders = int(rest.strip()), []
        elif seq is None:
            continue
        elif word == "holder":
            parts = rest.split("\t")
            if len(parts) == 4 and parts[0] and parts[1] and all(COUNT.fullmatch(p) for p in parts[2:]):
                holders.append(Holder(parts[0], parts[1], int(parts[2]), int(parts[3])))
        elif word == "end":
            out.append((seq, holders))
            seq = None
    return out
