"""A soak's samples -> the answer: verdicts, the checkpoint table, projections, max_request
advice and the allocation stacks that grow. Pure: dicts in, dicts and text out, so that
`asanlab replay` renders a stored soak exactly as the soak did.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from . import growth, memory
from ..reports import php_stack
from .attribution import agent_memory, growing_holders, growing_php_sites, growing_sites, not_measured
from .counts import counted, descriptors, stopped_answering
from .growth import DEFAULT_BUDGET, Criteria, size

SCHEMA = 1
# Above this share of failed requests (errors, non-2xx, timeouts), memory per request measures
# nothing the app did: the verdict is INCONCLUSIVE, unless a resource already leaked.
MAX_FAILED = 0.1
ROLE_ORDER = ("master", "server", "manager", "worker", "task worker", "user process", "process")
METRICS = {
    "allocated": "ASan allocator live bytes (quarantine excluded)",
    "uss": "private memory (USS, /proc/PID/smaps_rollup)",
    "rss_anon": "anonymous resident memory (RssAnon)",
    "rss": "resident memory (RSS)",
}


def choose_metric(samples: list[dict]) -> str:
    for metric in METRICS:
        if any(p.get(metric) for s in samples for p in s["processes"].values()):
            return metric
    return "rss"


KIND_NAMES = {"global": "a global variable", "static-property": "a static property",
              "static-var": "a function's static variable", "swoole-timers": "callbacks Swoole holds"}


def analyse(samples: list[dict], profiles: dict[int, list[tuple[int, memory.Profile]]], criteria: Criteria, *,
            budget: int = DEFAULT_BUDGET, load: dict | None = None, app: str | None = None,
            php_heaps: dict[int, list[tuple[int, list[php_stack.HeapSite]]]] | None = None,
            census: dict[int, list[tuple[int, list[php_stack.Holder]]]] | None = None, agent: bool = True,
            emfile: dict | None = None,
            bookkeeping: dict[int, list[tuple[int, int]]] | None = None) -> dict:
    metric = choose_metric(samples)
    last = samples[-1] if samples else {"requests": 0, "processes": {}}
    roles: dict[int, Counter] = defaultdict(Counter)
    points: dict[int, list[tuple[int, float]]] = defaultdict(list)
    seen: dict[int, list[int]] = defaultdict(list)
    for s in samples:
        for pid_s, p in s["processes"].items():
            pid = int(pid_s)
            roles[pid][p.get("role", "process")] += 1
            seen[pid].append(s["requests"])
            if p.get(metric) is not None:
                points[pid].append((s["requests"], float(p[metric])))
    # Samples that list no process while the container still runs are the sampler failing, not every
    # process gone at once; when the container had exited, or the soak ended because the app exited
    # (a sample can catch it shutting down, still running but with no process left), they are gone.
    listed = [s for s in samples if s["processes"]]
    trailing = samples[samples.index(listed[-1]) + 1:] if listed else []
    app_exited = (load or {}).get("app_exited_after") is not None
    unsampled = (len(trailing) if trailing and not app_exited and all(s.get("running") is True for s in trailing)
                 else 0)
    # An app that exited left no process alive, even one the last sample caught shutting down.
    alive = set() if app_exited else {int(pid) for pid in (listed[-1] if unsampled else last)["processes"]}
    silence = stopped_answering(samples)
    series = []
    events = []
    first_requests = samples[0]["requests"] if samples else 0
    for pid in sorted(seen, key=lambda k: (seen[k][0], k)):
        role = roles[pid].most_common(1)[0][0]
        v = growth.judge(points[pid], criteria)
        entry = {"pid": pid, "role": role, "first": seen[pid][0], "last": seen[pid][-1], "alive": pid in alive,
                 "stopped_answering": silence.get(pid), **v.as_dict()}
        series.append(entry)
        if seen[pid][0] > first_requests:
            events.append(f"{role} pid {pid} appeared by {seen[pid][0]} requests (a restart: max_request, "
                          "or a crash; it is a new series)")
        silent = silence.get(pid)
        if app_exited and silent == seen[pid][-1]:
            silent = None  # silent only in the last sample before the app exited: it was shutting down
        if silent is not None:
            last_point = max((pt for pt in points[pid] if pt[0] < silent), default=None)
            fds = next((smp["processes"][str(pid)].get("fds") for smp in reversed(samples)
                        if str(pid) in smp["processes"]), None)
            events.append(f"{role} pid {pid} stopped answering asanlab's agent at {silent} requests while still "
                          "running" + (f" (last reading {size(last_point[1])} at {last_point[0]} requests)"
                                       if last_point else "") +
                          (f"; it has {fds} open file descriptors" if fds is not None else "") +
                          ": out of descriptors, hung, or too busy to answer")
        if pid not in alive:
            events.append(f"{role} pid {pid} was gone after {seen[pid][-1]} requests")
    if unsampled:
        events.append(f"the last {unsampled} sample(s) listed no process (the sampler failed, after "
                      f"{listed[-1]['requests']} requests): the processes are judged on the samples before")
    judged = [s for s in series if s["fit"] is not None or s["alive"]]
    verdicts = [growth.Verdict(s["verdict"], s["reason"]) for s in judged]
    fds = descriptors(samples, alive, criteria.warmup)
    if emfile and fds:
        exhausted = [s for s in fds["series"] if s["verdict"] == growth.LEAK and s["alive"]]
        if exhausted:
            who = ", ".join(f"{s['role']} pid {s['pid']} ({s['open']} open)" for s in exhausted)
            events.insert(0, f"{who}: alive, out of descriptors (EMFILE"
                             + (f" from {emfile['where']}" if emfile.get("where") else "")
                             + f" in the app's output, {emfile['count']} time(s))")
            # Said once, for all of them: the per-process "stopped answering" notes add nothing.
            gone_quiet = {s["pid"] for s in exhausted}
            events = [e for e in events if not any(e.startswith(f"{r['role']} pid {r['pid']} stopped answering")
                                                   for r in series if r["pid"] in gone_quiet)]
    coroutines = counted(samples, alive, "coroutines", "coroutines")
    for c in (fds, coroutines):
        if c:
            verdicts += [growth.Verdict(s["verdict"], s["reason"]) for s in c["series"]
                         if s["fit"] is not None or s["alive"]]
    overall = growth.overall(verdicts)
    undecided = None
    if load and load.get("sent") and load.get("failed", 0) / load["sent"] > MAX_FAILED:
        resource_leak = any(c and c["verdict"] == growth.LEAK for c in (fds, coroutines))
        undecided = (f"{load['failed']} of {load['sent']} requests failed "
                     f"({100 * load['failed'] / load['sent']:.0f}%, more than {100 * MAX_FAILED:.0f}%"
                     + ("; the app was out of descriptors" if emfile else "") + ")")
        if not resource_leak:
            overall = growth.INCONCLUSIVE
    fits = [s["fit"] for s in series if s["alive"] and s["fit"]]
    slope = sum(f["slope"] for f in fits) if fits else None
    interval = [sum(f["low"] for f in fits), sum(f["high"] for f in fits)] if fits else None
    more = [s["more_requests"] for s in series if s["verdict"] == growth.INCONCLUSIVE and s["more_requests"]]

    return {
        "schema": SCHEMA, "metric": metric, "metric_label": METRICS[metric],
        "criteria": {"threshold": criteria.threshold, "min_growth": criteria.min_growth, "warmup": criteria.warmup},
        "verdict": overall, "failed_requests": undecided, "bytes_per_request": slope, "interval": interval,
        "per_million": slope * 1_000_000 if slope is not None else None,
        "more_requests": max(more) if overall == growth.INCONCLUSIVE and more else None,
        "series": series, "events": events,
        "checkpoints": checkpoint_table(samples, metric),
        "advice": advice(series, samples, metric, budget),
        "growing_sites": growing_sites(profiles, criteria.warmup, app=app),
        "growing_php_sites": growing_php_sites(php_heaps or {}, criteria.warmup),
        "growing_holders": growing_holders(census or {}, criteria.warmup),
        "descriptors": fds, "coroutines": coroutines, "resource_rates": resource_rates(fds, coroutines),
        "out_of_descriptors": emfile,
        "agent_memory": agent_memory(bookkeeping or {}, points) if metric == "allocated" else None,
        "not_measured": not_measured(agent, samples, php_heaps or {}, census or {}, coroutines),
        "load": load,
    }


def resource_rates(fds: dict | None, coroutines: dict | None) -> list[dict]:
    """The counts judged LEAK, as the soak's headline names them: their summed rate per request
    over the processes that leak them, and the path or peer that gains most."""
    out = []
    for what, unit, c in (("open file descriptors", "fds", fds), ("Swoole coroutines", "coroutines", coroutines)):
        if not c or c["verdict"] != growth.LEAK:
            continue
        fits = [s["fit"] for s in c["series"] if s["verdict"] == growth.LEAK and s.get("fit")]
        growing = c.get("growing") or []
        out.append({"what": what, "unit": unit, "per_request": sum(f["slope"] for f in fits),
                    "site": growing[0]["site"] if growing else None})
    return out


def checkpoint_table(samples: list[dict], metric: str) -> list[dict]:
    """Per checkpoint, the metric summed by role. A process that did not answer leaves its role's
    sum and the total unknown (None): never a zero."""
    rows = []
    previous = None
    measured: set[str] = set()
    for s in samples:
        measured |= {pid for pid, p in s["processes"].items() if p.get(metric) is not None}
        if not (s.get("checkpoint") or s is samples[0]):
            continue
        by_role: dict[str, int | None] = defaultdict(int)
        for pid, p in s["processes"].items():
            role = p.get("role", "process")
            if p.get(metric) is None and (p.get("answered") is False or pid in measured):
                by_role[role] = None
            elif by_role[role] is not None:
                by_role[role] += int(p.get(metric) or 0)
        total = None if None in by_role.values() else sum(by_role.values())
        row = {"requests": s["requests"], "by_role": dict(by_role), "total": total, "cgroup": s.get("cgroup"),
               "growth": None, "bytes_per_request": None, "server_requests": s.get("server_requests"),
               "stats_reads": s.get("stats_reads")}
        if previous is not None and s["requests"] > previous["requests"] and None not in (total, previous["total"]):
            row["growth"] = total - previous["total"]
            row["bytes_per_request"] = row["growth"] / (s["requests"] - previous["requests"])
        rows.append(row)
        previous = row
    return rows


def advice(series: list[dict], samples: list[dict], metric: str, budget: int) -> dict | None:
    """max_request from the workers' measured growth: each worker gets about 1/n of the requests."""
    # max_request restarts event workers only (task workers have task_max_request).
    workers = [s for s in series if s["role"] in ("worker", "server") and s["alive"] and s["fit"]]
    if not workers:
        return None
    n = len(workers)
    # A worker's slope is per request of the whole server; it serves about 1/n of them, so per
    # request of its own it grows n times that: on average, the sum of the workers' slopes.
    per_own_request = sum(w["fit"]["slope"] for w in workers)
    if per_own_request <= 0:
        return {"workers": n, "per_worker_request": per_own_request, "max_request": None, "budget": budget}
    reach = int(budget / per_own_request)
    return {"workers": n, "per_worker_request": per_own_request, "budget": budget,
            # max_request_grace (max_request / 2 by default) lets a worker run up to 1.5x longer.
            "max_request": max(1, int(reach / 1.5)), "requests_to_budget": reach}


def render(a: dict, chart: str = "") -> str:
    out = []
    label = a["metric_label"]
    bpr = a["bytes_per_request"]
    head = f"soak: {a['verdict']}"
    for r in a.get("resource_rates") or []:  # a resource that runs out is the finding: named first
        head += f", {r['per_request']:.2f} {r['what']}/request" + (f" ({r['site']})" if r.get("site") else "")
    if bpr is not None:
        lo, hi = a["interval"]
        head += (", memory " if a.get("resource_rates") else ", ") + \
            f"{bpr:.1f} B/request (95% {lo:.1f}..{hi:.1f}), {size(a['per_million'])} per 1M requests"
    out.append(head)
    out.append(f"measured: {label}; fitted after {a['criteria']['warmup']} requests; "
               f"LEAK needs >= {a['criteria']['threshold']:g} B/request and {size(a['criteria']['min_growth'])} growth")
    if a.get("failed_requests"):
        out.append(f"warning: {a['failed_requests']}: memory per request is not measured on answered requests"
                   + ("" if a["verdict"] == growth.LEAK else "; the verdict cannot be STABLE or LEAK"))
    if a.get("more_requests"):
        out.append(f"undecided: about {a['more_requests']} more requests would decide it (--checkpoints)")
    load = a.get("load")
    if load:
        rate = load["sent"] / load["seconds"] if load.get("seconds") else 0
        line = f"load: {load['sent']} requests, {load['failed']} failed, {rate:.0f} req/s while loading"
        if load.get("statuses"):
            line += "; status " + ", ".join(f"{k}: {v}" for k, v in load["statuses"].items())
        if load.get("errors"):
            line += "; errors " + ", ".join(f"{k}: {v}" for k, v in load["errors"].items())
        out.append(line)
    out.append("")
    rows = a["checkpoints"]
    roles = [r for r in ROLE_ORDER if any(r in row["by_role"] for row in rows)]
    server = any(row.get("server_requests") is not None for row in rows)
    header = ["requests", *(["server counted"] if server else []), *roles, "total", "growth", "B/request"]
    table = [header]
    for row in rows:
        counted = [str(row["server_requests"]) if row.get("server_requests") is not None else "?"] if server else []
        table.append([str(row["requests"]), *counted,
                      *["?" if r in row["by_role"] and row["by_role"][r] is None else size(row["by_role"].get(r, 0))
                        for r in roles],
                      size(row["total"]) if row["total"] is not None else "?",
                      size(row["growth"]) if row["growth"] is not None else "",
                      f"{row['bytes_per_request']:.1f}" if row["bytes_per_request"] is not None else ""])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        out.append("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if server:
        reads = max((row.get("stats_reads") or 0) for row in rows)
        out.append(f"  server counted: request_count at --stats-url, which counts asanlab's {reads} reads of it")
    out.append("")
    out.append("per process:")
    for s in a["series"]:
        state = "" if s["alive"] else " (gone)"
        if s.get("stopped_answering") is not None and s["alive"]:
            state = f" (stopped answering at {s['stopped_answering']} requests)"
        out.append(f"  {s['role']:<8} pid {s['pid']:<6} {s['verdict']:<12} {s['reason']}{state}")
    for e in a["events"]:
        out.append(f"  note: {e}")
    fds = a.get("descriptors")
    if fds:
        out.append("")
        out.append(f"open file descriptors: {fds['verdict']} (LEAK needs >= {fds['criteria']['threshold']:g} "
                   f"fds/request and {fds['criteria']['min_growth']} more)")
        for s in fds["series"]:
            state = "" if s["alive"] else " (gone)"
            kinds = ", ".join(f"{k} {n}" for k, n in list(s["kinds"].items())[:4])
            out.append(f"  {s['role']:<8} pid {s['pid']:<6} {s['verdict']:<12} {s['reason']}; "
                       f"{s['open']} open ({kinds}){state}")
        for g in fds["growing"][:5]:
            out.append(f"  {g['per_request']:8.3f} fds/request  {g['site']}  in {g['processes']} process(es)")
    co = a.get("coroutines")
    if co:
        out.append("")
        out.append(f"Swoole coroutines alive: {co['verdict']}")
        for s in co["series"]:
            state = "" if s["alive"] else " (gone)"
            out.append(f"  {s['role']:<8} pid {s['pid']:<6} {s['verdict']:<12} {s['reason']}; {s['open']} alive{state}")
    adv = a.get("advice")
    if adv and adv.get("max_request"):
        out.append("")
        out.append(f"max_request: each of {adv['workers']} worker(s) grows about {adv['per_worker_request']:.1f} B per "
                   f"request it serves; to stay within {size(adv['budget'])} of growth set max_request <= "
                   f"{adv['max_request']} (max_request_grace lets a worker run up to 1.5x longer)")
    holders = a.get("growing_holders") or []
    if holders:
        out.append("")
        out.append("growing PHP variables (what holds the heap, per request; census by asanlab's agent):")
        for h in holders[:5]:
            rate = f"{h['bytes_per_request']:8.1f} B/request" if h["bytes_per_request"] is not None else " " * 17
            out.append(f"  {rate}  {h['elements_per_request']:.2f} elements/request"
                       f"  {h['path']}  ({KIND_NAMES.get(h['kind'], h['kind'])}, in {h['processes']} process(es))")
    php_sites = a.get("growing_php_sites") or []
    if php_sites:
        out.append("")
        out.append("growing PHP allocation sites (live heap, per request; sampled by asanlab's agent):")
        for g in php_sites[:5]:
            out.append(f"  {g['bytes_per_request']:8.1f} B/request  {g['allocations_per_request']:.2f} allocations/request"
                       f"  in {g['processes']} process(es)")
            out.append(f"           at {g['path']}")
    sites = a.get("growing_sites") or []
    if sites:
        out.append("")
        out.append("growing allocation stacks (live heap, per request):")
        for g in sites[:5]:
            out.append(f"  {g['bytes_per_request']:8.1f} B/request  {g['allocations_per_request']:.2f} allocations/request"
                       f"  in {g['processes']} process(es)")
            out.append(f"           from {g['site']}")
            if g.get("php"):
                out.append(f"           in PHP: {g['php']}")
    mem = a.get("agent_memory")
    if mem:
        out.append("")
        out.append(f"asanlab's agent kept {size(mem['bytes'])} for sampling, {mem['share']:.1%} of the live heap "
                   f"({size(mem['live_heap'])}) of pid {mem['pid']}, the largest share")
    for what in a.get("not_measured") or []:
        out.append(f"not measured: {what}")
    if chart:
        out.append("")
        out.append(chart)
    return "\n".join(out) + "\n"
