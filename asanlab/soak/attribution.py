"""What a soak names behind the growth: the allocation stacks (ASan's profiles), the PHP lines
(the agent's sampled live heap) and the PHP variables (the agent's census) that gain per request,
what the agent kept for it, and what it could not measure. Pure."""

from __future__ import annotations

from collections import defaultdict

from . import memory
from ..reports import php_stack

# Roots the census counts but cannot weigh (a Swoole timer's callback is held by Swoole's own list).
COUNTED_ONLY = {"swoole-timers"}


def ranked_growth(series_by_pid: dict[int, list[tuple[int, dict[str, tuple[float, float]]]]], warmup: int,
            top: int) -> list[tuple[str, float, float, float, int]]:
    """Keys ranked by the live bytes they keep gaining per request, summed over processes:
    (key, bytes/request over the window, steady bytes/request, count/request, processes).

    The rate is over the whole window (first profile after warm-up to the last). The rank is by the
    smallest rate of any interval between two profiles: a leak gains in every interval, while a
    cache or a buffer that grows to its working size gains early and then stops."""
    rate: dict[str, float] = defaultdict(float)
    steady: dict[str, float] = defaultdict(float)
    count_rate: dict[str, float] = defaultdict(float)
    pids: dict[str, set] = defaultdict(set)
    for pid, series in series_by_pid.items():
        series = sorted(series, key=lambda rt: rt[0])
        tables = [rt for rt in series if rt[0] >= warmup] or series
        if len(tables) < 2 or tables[-1][0] <= tables[0][0]:
            continue
        (r0, first), (r1, last) = tables[0], tables[-1]
        for key, (nbytes, count) in last.items():
            old_bytes, old_count = first.get(key, (0.0, 0.0))
            gained = nbytes - old_bytes
            if gained <= 0:
                continue
            rate[key] += gained / (r1 - r0)
            count_rate[key] += (count - old_count) / (r1 - r0)
            pids[key].add(pid)
            steady[key] += min(((tb.get(key, (0.0, 0.0))[0] - ta.get(key, (0.0, 0.0))[0]) / (rb - ra) if rb > ra else 0.0)
                               for (ra, ta), (rb, tb) in zip(tables, tables[1:]))
    ranked = sorted(rate, key=lambda k: (-steady[k], -rate[k]))[:top]
    return [(k, rate[k], steady[k], count_rate[k], len(pids[k])) for k in ranked]


def growing_sites(profiles: dict[int, list[tuple[int, memory.Profile]]], warmup: int, top: int = 10,
                  app: str | None = None) -> list[dict]:
    """ASan's allocation stacks (C frames) ranked by the live bytes they gain per request."""
    frames: dict[str, list] = {}
    tables: dict[int, list[tuple[int, dict[str, tuple[float, float]]]]] = {}
    for pid, series in profiles.items():
        tables[pid] = []
        for requests, p in series:
            table = {}
            for c in p.contexts:  # contexts cut to the same frames are one site
                b, n = table.get(c.key(), (0.0, 0.0))
                table[c.key()] = (b + c.bytes, n + c.count)
                frames.setdefault(c.key(), c.frames)
            tables[pid].append((requests, table))
    return [{"bytes_per_request": r, "steady_bytes_per_request": st, "allocations_per_request": cr,
             "site": memory.site(frames[k]), "processes": n, "php": memory.php_context(frames[k], app),
             "frames": [f.describe() for f in frames[k][:16]]} for k, r, st, cr, n in ranked_growth(tables, warmup, top)]


def growing_php_sites(heaps: dict[int, list[tuple[int, list[php_stack.HeapSite]]]], warmup: int,
                      top: int = 10) -> list[dict]:
    """The PHP code behind the growing live heap (asanlab's agent samples allocations), ranked the
    same way, by the line of the app's own code that allocated (its innermost frame in /app): the
    calls under it (a closure object, the array it fills, a Swoole timer node) add up to that line.
    Each entry keeps the call path of its largest part."""
    sites: dict[str, php_stack.HeapSite] = {}
    tables: dict[int, list[tuple[int, dict[str, tuple[float, float]]]]] = {}
    for pid, series in heaps.items():
        tables[pid] = []
        for requests, found in series:
            table: dict[str, tuple[float, float]] = {}
            for site in found:
                app = php_stack.PhpStack(site.frames).app_frame()
                key = str(app) if app else site.key()
                b, n = table.get(key, (0.0, 0.0))
                table[key] = (b + site.bytes, n + site.blocks)
                if key not in sites or site.bytes > sites[key].bytes:
                    sites[key] = site
            tables[pid].append((requests, table))
    out = []
    for k, r, st, cr, n in ranked_growth(tables, warmup, top):
        stack = php_stack.PhpStack(sites[k].frames)
        app = stack.app_frame()
        out.append({"bytes_per_request": r, "steady_bytes_per_request": st, "allocations_per_request": cr,
                    "processes": n, "function": app.function if app else None, "file": app.file if app else None,
                    "line": app.line if app else None, "path": stack.path(),
                    "frames": [str(f) for f in sites[k].frames]})
    return out


def growing_holders(census: dict[int, list[tuple[int, list[php_stack.Holder]]]], warmup: int,
                    top: int = 10) -> list[dict]:
    """The PHP variables that hold more per request (the agent's census of the heap's roots),
    ranked like allocation sites; a member (`$app->cache`) and its root (`$app`) are counted apart."""
    kinds: dict[str, str] = {}
    tables: dict[int, list[tuple[int, dict[str, tuple[float, float]]]]] = {}
    for pid, series in census.items():
        tables[pid] = []
        for requests, holders in series:
            table = {}
            for h in holders:
                # Swoole holds timers' callbacks out of PHP's sight: counted, not measured, so
                # they are ranked by count.
                counted_only = h.kind in COUNTED_ONLY
                table[h.path] = (float(h.elements if counted_only else h.bytes), float(h.elements))
                kinds[h.path] = h.kind
            tables[pid].append((requests, table))
    out = []
    for k, r, st, er, n in ranked_growth(tables, warmup, top):
        if st <= 0:
            continue
        measured = kinds[k] not in COUNTED_ONLY
        out.append({"path": k, "kind": kinds[k], "bytes_per_request": r if measured else None,
                    "steady_bytes_per_request": st if measured else None, "elements_per_request": er,
                    "processes": n})
    return out


def agent_memory(bookkeeping: dict[int, list[tuple[int, int]]], points: dict[int, list[tuple[int, float]]]) -> dict | None:
    """The agent's own memory against the app's: at each process's last profile, what the sampler
    kept and the live heap then; the process where that share was largest."""
    worst = None
    for pid, series in bookkeeping.items():
        live = dict(points.get(pid, []))
        if not series or not live.get(series[-1][0]):
            continue
        requests, kept = series[-1]
        share = kept / live[requests]
        if worst is None or share > worst["share"]:
            worst = {"pid": pid, "bytes": kept, "live_heap": live[requests], "share": share}
    return worst


def not_measured(agent: bool, samples: list[dict], heaps: dict, census: dict, coroutines: dict | None) -> list[str]:
    """What attribution could not do in this soak, and why: said once, beside the verdict."""
    if not agent:
        return ["the image has no asanlab agent: memory from /proc only (no allocator bytes, allocation stacks, "
                "PHP lines, PHP variables or coroutine counts)"]
    out = []
    if not any(series for series in heaps.values()):
        out.append("PHP allocation sites: no process answered with one (no PHP ran in a worker while sampling, "
                   "or ASANLAB_PHP_SAMPLE_BYTES=0)")
    if sum(len(series) for series in census.values()) < 2:
        out.append("PHP variables: fewer than two censuses of the PHP heap (a census is taken at the next request a "
                   "process serves after a checkpoint)")
    if coroutines is None and samples:
        out.append("Swoole coroutines: not counted (Swoole is not loaded in the app)")
    return out
