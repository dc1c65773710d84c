"""What a soak measures, parsed: per-process memory from /proc, the agent's answers, and ASan's
live-heap profiles. Pure: text in, data out.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

from .findings import meaningful
from .reports import Frame, parse_frame


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
            current = Process(pid=int(line.split()[1]), ppid=0)
            in_cgroup = False
        elif line.startswith("@cgroup"):
            close()
            current, in_cgroup = None, True
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
            else:
                m = re.match(r"^(\w+):\s+(\d+) kB", line)
                if m:
                    kb[m.group(1)] = int(m.group(2))
    close()
    assign_roles(processes)
    return Snapshot(processes, cgroup)


def assign_roles(processes: dict[int, Process]) -> None:
    """master / manager / worker from the process tree (Swoole: master -> manager -> workers; a
    prefork server: master -> workers; a single process: server). Task workers are workers too:
    nothing outside the app tells them apart."""
    children: dict[int, list[int]] = {}
    for p in processes.values():
        if p.ppid in processes:
            children.setdefault(p.ppid, []).append(p.pid)
    for p in processes.values():
        if p.ppid in processes:
            p.role = "manager" if children.get(p.pid) else "worker"
        else:
            p.role = "master" if children.get(p.pid) else "server"


@dataclass
class Answer:
    """One line the agent wrote: the process's allocator counters at one request of the host."""
    seq: int
    pid: int
    ppid: int
    allocated: int
    heap: int
    profiled: bool


def parse_answers(text: str) -> list[Answer]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 6 and all(p.isdigit() for p in parts):
            seq, pid, ppid, allocated, heap, profiled = map(int, parts)
            out.append(Answer(seq, pid, ppid, allocated, heap, bool(profiled)))
    return out


PROFILE_HEADER = re.compile(r"^Live Heap Allocations: (?P<bytes>\d+) bytes in (?P<chunks>\d+) chunks")
CONTEXT = re.compile(r"^(?P<bytes>\d+) byte\(s\) \(\d+%\) in (?P<count>\d+) allocation\(s\)")


@dataclass
class Context:
    """One allocation stack of a live-heap profile: what is still allocated from it."""
    bytes: int
    count: int
    frames: list[Frame] = field(default_factory=list)

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


def to_dict(obj) -> dict:
    return asdict(obj)
