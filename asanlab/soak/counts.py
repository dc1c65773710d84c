"""Counts judged like memory: open file descriptors (by kind and by path or peer) and Swoole
coroutines per process, and the processes that stopped answering the agent. Pure."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Iterable

from . import growth
from .attribution import ranked_growth
from .growth import Criteria

# Open descriptors: one more every 1,000 requests, 16 more in all, is a leak (a server's own
# descriptors are a fixed set; keep-alive connections come and go with the load).
FD_CRITERIA = Criteria(threshold=0.001, min_growth=16)


def descriptors(samples: list[dict], alive: set[int], warmup: int) -> dict | None:
    """Open file descriptors judged like memory, per process (FD_CRITERIA), and the patterns
    (a path, a peer) that gain descriptors per request. None when the sampler listed none."""
    tables: dict[int, list[tuple[int, dict[str, tuple[float, float]]]]] = defaultdict(list)
    for s in samples:
        for pid_s, p in s["processes"].items():
            if p.get("fds") is not None:
                tables[int(pid_s)].append((s["requests"], {k: (float(n), float(n))
                                                           for k, n in (p.get("fd_sites") or {}).items()}))
    out = counted(samples, alive, "fds", "fds", extra=lambda p: {"kinds": p.get("fd_kinds") or {}})
    if out is not None:
        out["growing"] = [{"site": k, "per_request": r, "steady_per_request": st, "processes": n}
                          for k, r, st, _, n in ranked_growth(tables, warmup, 10) if r >= FD_CRITERIA.threshold]
    return out


def counted(samples: list[dict], alive: set[int], field: str, unit: str, extra=lambda p: {}) -> dict | None:
    """A count per process (descriptors, coroutines) judged like memory with FD_CRITERIA: a
    process's own set of them is fixed, one more per request is a leak. None when never counted."""
    points: dict[int, list[tuple[int, float]]] = defaultdict(list)
    roles: dict[int, Counter] = defaultdict(Counter)
    latest: dict[int, dict] = {}
    for s in samples:
        for pid_s, p in s["processes"].items():
            if p.get(field) is None:
                continue
            pid = int(pid_s)
            points[pid].append((s["requests"], float(p[field])))
            roles[pid][p.get("role", "process")] += 1
            latest[pid] = p
    if not points:
        return None
    series = []
    for pid in sorted(points, key=lambda k: (points[k][0][0], k)):
        v = growth.judge(points[pid], FD_CRITERIA, unit=unit)
        series.append({"pid": pid, "role": roles[pid].most_common(1)[0][0], "alive": pid in alive,
                       "open": latest[pid][field], **extra(latest[pid]), **v.as_dict()})
    return {"criteria": {"threshold": FD_CRITERIA.threshold, "min_growth": FD_CRITERIA.min_growth},
            "verdict": growth.overall([growth.Verdict(s["verdict"], s["reason"]) for s in series
                                       if s["fit"] is not None or s["alive"]]),
            "series": series}


def stopped_answering(samples: list[dict]) -> dict[int, int]:
    """pid -> the request count from which a running process stopped answering the agent's
    requests for good (it answered before, and never after)."""
    out: dict[int, int] = {}
    answered: set[int] = set()
    for s in samples:
        for pid_s, p in s["processes"].items():
            pid = int(pid_s)
            # Sessions from before the "answered" mark: an answer missing after answers is a silence.
            if p.get("answered") is False or ("allocated" not in p and pid in answered):
                out.setdefault(pid, s["requests"])
            elif "allocated" in p:
                answered.add(pid)
                out.pop(pid, None)  # it answered again: a slow moment, not a stop
    return out


# What PHP, Swoole and libc say when a process is out of descriptors (EMFILE): PHP's warning names
# the function and the app's line.
EMFILE = re.compile(r"Too many open files")
PHP_WARNING = re.compile(r"Warning: (?P<fn>[A-Za-z_][A-Za-z0-9_:\\]*)\(.*?\): .*?Too many open files "
                         r"in (?P<file>\S+) on line (?P<line>\d+)")


def out_of_descriptors(lines: Iterable[str]) -> dict | None:
    """From the app's output: how often it said it was out of descriptors, and where first, as PHP
    names it (`fopen() at /app/server.php:12`); None when it never said so."""
    count, first, where = 0, None, None
    for line in lines:
        if not EMFILE.search(line):
            continue
        count += 1
        if where is None:
            m = PHP_WARNING.search(line)
            if m:
                where = f"{m['fn']}() at {m['file']}:{m['line']}"
        if first is None:
            first = line.strip()[:200]
    if not count:
        return None
    return {"count": count, "where": where, "first": first}
