"""What a soak measures, parsed: per-process memory from /proc, the agent's answers, and ASan's
live-heap profiles. Pure: text in, data out.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

from . import resources
from ..reports.findings import meaningful
from ..reports.sanitizers import Frame, parse_frame


@dataclass
class Process:
    pid: int
    ppid: int
    cmdline: str = ""
    rss: int | None = None  # bytes
    pss: int | None = None
    uss: int | None = None  # private clean + private dirty
    rss_anon: int | None = None
    role: str = "process"
    fds: int | None = None  # open file descriptors (None: not listed, e.g. an older sampler)
    fd_kinds: dict[str, int] = field(default_factory=dict)
    fd_sites: dict[str, int] = field(default_factory=dict)


@dataclass
class Snapshot:
    """One sampling moment of the container (docker exec of data/sample-memory.sh)."""
    processes: dict[int, Process]
    cgroup: int | None = None


def parse_snapshot(text: str) -> Snapshot:
    processes: dict[int, Process] = {}
    current: Process | None = None
    cgroup = None
    in_cgroup = False
    kb: dict[str, int] = {}
    fds: dict[int, list[str]] = {}
    net: dict[str, list[str]] = {}
    table: list[str] | None = None

    def close() -> None:
        if current is None:
            return
        if "Private_Clean" in kb or "Private_Dirty" in kb:
            current.uss = (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024
        current.pss = kb["Pss"] * 1024 if "Pss" in kb else None
        current.rss = (kb.get("Rss") or kb.get("VmRSS") or 0) * 1024 or None
        current.rss_anon = kb["RssAnon"] * 1024 if "RssAnon" in kb else None
        processes[current.pid] = current

    for line in text.splitlines():
        if line.startswith("@process "):
            close()
            kb = {}
            pid = line[9:].strip()
            current = Process(pid=int(pid), ppid=0) if pid.isascii() and pid.isdigit() else None
            in_cgroup, table = False, None
        elif line.startswith("@net "):
            close()
            current, table = None, net.setdefault(line[5:].strip(), [])
        elif line.startswith("@cgroup"):
            close()
            current, in_cgroup, table = None, True, None
        elif table is not None:
            table.append(line)
        elif in_cgroup:
            if line.strip().isdigit():
                cgroup = int(line.strip())
        elif current is not None:
            if line.startswith("stat "):
                # pid (comm) state ppid ...: comm may hold spaces and parentheses
                rest = line[5:].rsplit(")", 1)[-1].split()
                if len(rest) >= 2 and rest[1].isdigit():
                    current.ppid = int(rest[1])
            elif line.startswith("cmdline "):
                current.cmdline = line[8:].strip()
            elif line.startswith("fd "):
                parts = line.split(" ", 2)
                fds.setdefault(current.pid, []).append(parts[2] if len(parts) == 3 else "")
            else:
                m = re.match(r"^(\w+):\s+(\d+) kB", line)
                if m:
                    kb[m.group(1)] = int(m.group(2))
    close()
    assign_roles(processes)
    if net or fds:  # a sampler that lists descriptors: every process has a count, 0 included
        sockets = resources.parse_net({name: "\n".join(lines) for name, lines in net.items()})
        for p in processes.values():
            d = resources.summarise(fds.get(p.pid, []), sockets)
            p.fds, p.fd_kinds, p.fd_sites = d.total, d.kinds, d.sites
    return Snapshot(processes, cgroup)


def assign_roles(processes: dict[int, Process]) -> None:
    """master / manager / worker from the process tree (Swoole: master -> manager -> workers; a
    prefork server: master -> workers; a single process: server). Task workers are workers here:
    the tree cannot tell them apart; the agent's answer can (SWOOLE_ROLES)."""
    children: dict[int, list[int]] = {}
    for p in processes.values():
        if p.ppid in processes:
            children.setdefault(p.ppid, []).append(p.pid)
    for p in processes.values():
        if p.ppid in processes:
            p.role = "manager" if children.get(p.pid) else "worker"
        else:
            p.role = "master" if children.get(p.pid) else "server"


# Swoole's process types (swoole_get_worker_type(), Swoole >= 6.1) as asanlab's roles.
SWOOLE_ROLES = {1: "master", 2: "worker", 3: "manager", 4: "task worker", 5: "user process"}


@dataclass
class Answer:
    """One line the agent wrote: the process's allocator counters at one request of the host."""
    seq: int
    pid: int
    ppid: int
    allocated: int
    heap: int
    profiled: bool
    swoole_type: int = 0  # 0: unknown (no Swoole, or a Swoole before 6.1)
    coroutines: int | None = None  # Swoole's coroutines alive; None: unknown (no Swoole)

    @property
    def role(self) -> str | None:
        return SWOOLE_ROLES.get(self.swoole_type)


def parse_answers(text: str) -> list[Answer]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        # Six fields from agents before the Swoole type was added, seven before the coroutine count.
        if len(parts) in (6, 7, 8) and all(p.isdigit() for p in parts):
            seq, pid, ppid, allocated, heap, profiled, *rest = map(int, parts)
            out.append(Answer(seq, pid, ppid, allocated, heap, bool(profiled), rest[0] if rest else 0,
                              rest[1] if len(rest) > 1 else None))
    return out


PROFILE_HEADER = re.compile(r"^Live Heap Allocations: (?P<bytes>\d+) bytes in (?P<chunks>\d+) chunks")
CONTEXT = re.compile(r"^(?P<bytes>\d+) byte\(s\) \(\d+%\) in (?P<count>\d+) allocation\(s\)")


@dataclass
class Context:
    """One allocation stack of a live-heap profile: what is still allocated from it."""
    bytes: int
    count: int
    frames: list[Frame] = field(default_factory=list)
    cut: bool = False  # the stack went on into no module: unwinder garbage, left out

    def key(self) -> str:
        """The stack without addresses: the same site in two profiles (or two workers) has one key."""
        return " < ".join(f"{f.function or f.module or '?'}@{f.file or ''}" for f in self.frames)


@dataclass
class Profile:
    live_bytes: int
    live_chunks: int
    contexts: list[Context]


def parse_profiles(text: str | Iterable[str]) -> list[Profile]:
    """Every live-heap profile (__sanitizer_print_memory_profile) in one process's sanitizer log
    (its text, or its lines: an open file is streamed), in the order they were written. Reports
    in between are not profiles and are skipped."""
    profiles: list[Profile] = []
    current: Profile | None = None
    context: Context | None = None
    for line in (text.splitlines() if isinstance(text, str) else text):
        line = line.rstrip("\n")
        m = PROFILE_HEADER.match(line)
        if m:
            current = Profile(int(m.group("bytes")), int(m.group("chunks")), [])
            profiles.append(current)
            context = None
            continue
        if current is None:
            continue
        m = CONTEXT.match(line)
        if m:
            context = Context(int(m.group("bytes")), int(m.group("count")))
            current.contexts.append(context)
            continue
        if context is not None and line.lstrip().startswith("#"):
            f = parse_frame(line)
            if f is not None:
                # Unwinder garbage (Frame.misread) would split one site into many.
                context.cut = context.cut or f.misread
                if not context.cut:
                    context.frames.append(f)
                continue
        if not line.strip() or line.startswith("DEDUP_TOKEN:"):  # between contexts
            continue
        current, context = None, None  # anything else (a report's first line) ends the profile
    return profiles


def site(frames: list[Frame], depth: int = 4) -> str:
    """"malloc <- zend_ffi_... <- ..." : the allocator, then the frames that say who allocated."""
    shown = [f for f in meaningful(frames)[:depth]]
    names = [frames[0].function or "??"] if frames else []
    names += [f.function or f.location() for f in shown if f is not frames[0]]
    where = next((f.location() for f in shown if f.file), "")
    return " <- ".join(names) + (f" ({where})" if where else "")


# Where the PHP code that allocated was running, from the C frames that start it: the innermost
# match wins (a Swoole callback without coroutines runs under the script's own $server->start()).
PHP_ENTRIES = (
    ("php_swoole_http_server_onReceive", "the HTTP request handler ($server->on('request'))"),
    ("php_swoole_server_onReceive", "the receive handler ($server->on('receive'))"),
    ("php_swoole_server_onTask", "the task handler ($server->on('task'))"),
    ("php_swoole_server_onPipeMessage", "the pipeMessage handler"),
    ("php_swoole_server_onWorkerStart", "the workerStart handler"),
    ("PHPCoroutine::main_func", "a coroutine (Swoole runs each request handler in one with enable_coroutine)"),
    ("php_execute_script", "code the script runs itself (no Swoole callback)"),
)
_METHOD = re.compile(r"^(?P<cls>.+?)_(?P<name>__\w+|[^_]+)$")
_PARAMETERS = re.compile(r"\(.*\)$")  # a C++ function's demangled parameter list


def _php_name(symbol: str) -> str | None:
    """`zim_swoole_http_response_end(_zend_execute_data*, _zval_struct*)` -> `Swoole\\Http\\Response::end()`:
    a zif_ (function) or zim_ (method) frame as PHP names it; None for any other C function."""
    name = _PARAMETERS.sub("", symbol)
    if name == "zif_ffi_trampoline":
        return "an FFI call ($ffi->func())"
    if name.startswith("zif_"):
        return f"{name[4:]}()"
    if name.startswith("zim_"):
        m = _METHOD.match(name[4:])
        if not m:
            return f"{name[4:]}()"
        cls = m["cls"]
        if cls.lower().startswith("swoole_"):  # Swoole's C names spell its namespaces with underscores
            cls = "\\".join(part[:1].upper() + part[1:] for part in cls.split("_"))
        return f"{cls}::{m['name']}()"
    return None


def php_call(frames: list[Frame]) -> str | None:
    """The PHP function the app called that allocated: the innermost zif_ (function) or zim_
    (method) frame, written as PHP names it."""
    return next((n for n in (_php_name(f.function or "") for f in frames) if n), None)


def php_context(frames: list[Frame], app: str | None = None) -> str | None:
    """"an FFI call ($ffi->func()) in the HTTP request handler (...) of /app/server.php": what the C
    stack says of the PHP side. The PHP file and line are not in it: the C stack only shows the
    interpreter, so the app's entry script stands for the file.

    Only a PHP call inside the innermost entry (a Swoole callback, the script itself) made the
    allocation: a worker runs every request inside the script's `$server->start()`, whose frame
    is further out. No entry found, no context is said."""
    at = next((i for i, f in enumerate(frames) for needle, _ in PHP_ENTRIES if needle in (f.function or "")), None)
    entry = next(text for needle, text in PHP_ENTRIES if needle in (frames[at].function or "")) \
        if at is not None else None
    call = php_call(frames[:at] if at is not None else frames)
    if call is None and entry is None:
        return None
    out = call or "C code with no PHP call of the app's"
    if entry:
        out += f" in {entry}"
    if app:
        out += f" of {app}"
    return out


def to_dict(obj) -> dict:
    return asdict(obj)
