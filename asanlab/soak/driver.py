"""`asanlab soak`: the 1k / 10k / 100k-request method, automated.

The app runs as under `asanlab run` (same capture, same session). Beside it, a driver sends exact
numbers of requests, pausing at sample points to read every PHP process's memory: private and
proportional memory from /proc (docker exec, no ptrace), and, in asanlab's images, the ASan
allocator's live bytes and live-heap profiles through the agent (images/agent). After the soak the
samples are judged (growth.py) and the growing allocation stacks ranked.
"""

from __future__ import annotations

import io
import json
import os
import stat
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from . import memory
from .. import untrusted
from ..untrusted import atomic_write
from ..reports import php_stack
from ..session import CONTROL_SUBDIR
from ..errors import InfraError, UsageError
from ..events import Event, Reporter, null_reporter
from ..layout import AGENT_DIR, APP_DIR, CONTROL_DIR
from .growth import DEFAULT_BUDGET, Criteria
from .load import Loader, Request, make_loader
from ..run import Companion, DriverContext, RunOptions, RunResult, run

# A 16 MB quarantine instead of ASan's 256 MB: 12-15% more requests per second on the same server
# (measured at -O0), and less of the RSS plateau that the quarantine adds while it fills. A soak
# hunts leaks; a use-after-free is caught still, within a shorter reuse distance.
SOAK_QUARANTINE = {"quarantine_size_mb": 16}
# Sent after the last checkpoint, unsampled (the agent's census needs one request per process).
FLUSH_REQUESTS = 64


@dataclass
class SoakOptions:
    requests: list[Request]
    checkpoints: list[int]
    concurrency: int = 16
    samples_per_checkpoint: int = 8
    ready_timeout: float = 60.0
    profile_contexts: int = 500
    full_stacks: bool = False
    client: str = "auto"  # the load generator: auto, builtin or h2load
    stats_url: str | None = None  # the app's own counters as JSON with request_count (Swoole's $server->stats())
    url: str = ""  # the base URL, as given (kept in the session for the report)
    criteria: Criteria = field(default_factory=Criteria)
    budget: int = DEFAULT_BUDGET  # bytes of growth a worker may reach, for the max_request advice

    def stored(self, agent_path: str | None, client: str) -> dict:
        """What the session keeps under "soak", so that `asanlab replay` judges the samples the same
        way (soak_result reads it back)."""
        return {"url": self.url, "checkpoints": self.checkpoints, "concurrency": self.concurrency,
                "threshold": self.criteria.threshold, "min_growth": self.criteria.min_growth,
                "warmup": self.criteria.warmup, "budget": self.budget, "agent": agent_path,
                "full_stacks": self.full_stacks, "stats_url": self.stats_url, "client": client}

    @staticmethod
    def stored_criteria(stored: dict) -> Criteria:
        """The criteria back from what stored() kept (a session from before a key existed gets its default)."""
        return Criteria(threshold=stored.get("threshold", Criteria.threshold),
                        min_growth=stored.get("min_growth", Criteria.min_growth), warmup=stored.get("warmup", 0))


def parse_checkpoints(spec: str) -> list[int]:
    try:
        points = [int(p.replace("_", "").replace("k", "000")) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"--checkpoints {spec!r}: expected request counts, e.g. 1000,10000,100000") from None
    if not points or any(p <= 0 for p in points) or points != sorted(set(points)):
        raise UsageError(f"--checkpoints {spec!r}: expected increasing positive counts, e.g. 1000,10000,100000")
    return points


def schedule(checkpoints: list[int], per_interval: int) -> list[tuple[int, bool]]:
    """Sample points (requests, is_checkpoint): `per_interval` evenly spaced up to each checkpoint."""
    points: dict[int, bool] = {}
    previous = 0
    for c in checkpoints:
        for i in range(1, per_interval + 1):
            points.setdefault(previous + (c - previous) * i // per_interval, False)
        points[c] = True
        previous = c
    return sorted(points.items())


def _sampler_script() -> str:
    return resources.files("asanlab").joinpath("data/sample-memory.sh").read_text()


@dataclass
class _Recorder:
    """The soak's own files in the session: samples.jsonl grows one line per sample, so an
    interrupted soak keeps every sample taken."""
    folder: Path
    samples: list[dict] = field(default_factory=list)

    def add(self, sample: dict) -> None:
        self.samples.append(sample)
        with open(self.folder / "samples.jsonl", "a") as f:
            f.write(json.dumps(sample) + "\n")


class Driver:
    def __init__(self, opts: SoakOptions, agent: bool, loader: Loader) -> None:
        self.opts, self.agent, self.loader = opts, agent, loader
        self.script = _sampler_script()
        self.seq = 0
        self.stats_reads = 0  # the server counts these requests too
        self.stats_warned = False
        self.agentless_said: set[int] = set()

    def __call__(self, ctx: DriverContext) -> None:
        folder = ctx.session.path / "soak"
        folder.mkdir(exist_ok=True)
        rec = _Recorder(folder)
        self._wait_ready(ctx)
        client = "built-in client" if self.loader.name == "builtin" else self.loader.name
        ctx.reporter(Event("soak.ready", f"the app answers: soak starts ({client}, {self.opts.concurrency} in flight)"))
        # The probe that found the app ready was served like any request: count it.
        done = self.loader.probes_answered
        rec.add(self._sample(ctx, done, False))
        plan = schedule(self.opts.checkpoints, self.opts.samples_per_checkpoint)
        last = plan[-1][0]
        exited_after = None  # requests served when the app was found exited
        for point, checkpoint in plan:
            stats = self.loader.send(point - done, ctx.stop)
            done += stats.sent
            if ctx.stop.is_set():
                if _exited(ctx):  # not stopped: it died
                    exited_after = done
                    ctx.reporter(Event("soak.warning", f"the app exited after {done} requests: {_exit_of(ctx)}"))
                else:
                    ctx.reporter(Event("soak.stopped", f"stopped at {done} requests"))
                break
            sample = self._sample(ctx, done, checkpoint)
            sample["load"] = stats.as_dict()
            rec.add(sample)
            if sample.get("running") is False:
                exited_after = done
                ctx.reporter(Event("soak.warning", f"the app exited after {done} requests: {_exit_of(ctx)}"))
                break
            total = self.loader.total
            ctx.reporter(Event("soak.progress", f"{done}/{last} requests ({total.failed} failed), "
                                                f"{stats.sent / stats.seconds if stats.seconds else 0:.0f} req/s"
                                                + (" - checkpoint" if checkpoint else ""),
                               {"done": done, "total": last, "checkpoint": checkpoint}))
        load = self.loader.total.as_dict()  # the requests asked for, as asked
        if exited_after is not None:
            # Samples that listed no process while the container was still shutting down were the
            # app ending, not the sampler failing: the analysis reads this.
            load["app_exited_after"] = exited_after
        if self.agent and not ctx.stop.is_set():
            # The agent's census of the PHP heap runs in PHP, at the next request a process serves:
            # a few more requests let the last checkpoint's census be taken. Counted apart.
            load["census_requests"] = self.loader.send(FLUSH_REQUESTS, ctx.stop).sent
        (folder / "load.json").write_text(json.dumps(load, indent=2) + "\n")

    def _wait_ready(self, ctx: DriverContext) -> None:
        deadline = time.monotonic() + self.opts.ready_timeout
        why = None
        while time.monotonic() < deadline and not ctx.stop.is_set():
            ctx.container.reload()
            if ctx.container.status in ("exited", "dead"):
                raise InfraError("the app exited before it answered on the URL; see its output above")
            why = self.loader.probe()
            if why is None:
                return
            time.sleep(0.5)
        if not ctx.stop.is_set():
            raise InfraError(f"the app did not answer on {self.opts.requests[0].url} within "
                             f"{self.opts.ready_timeout:.0f} s ({why}); is the port published (-p)?")

    def _sample(self, ctx: DriverContext, requests: int, profile: bool) -> dict:
        t = time.time()
        from docker.errors import APIError

        # LD_PRELOAD emptied: the sampler's shell must not load the agent.
        try:
            code, out = ctx.container.exec_run(["sh", "-c", self.script], environment={"LD_PRELOAD": ""},
                                               demux=False)
        except APIError as e:
            # 409: the daemon refused the exec because the container stopped, before its status says so.
            if not (_exited(ctx) or e.status_code == 409):
                raise
            out = b""  # the app exited: a sample of no process, said by __call__
        snap = memory.parse_snapshot((out or b"").decode(errors="replace"))
        sample = {"requests": requests, "time": t, "checkpoint": profile, "cgroup": snap.cgroup,
                  "processes": {str(p.pid): memory.to_dict(p) for p in snap.processes.values()}}
        if not snap.processes:
            # No process listed: the app is gone, or the sampler failed. Only the container can say.
            sample["running"] = not _exited(ctx)
        if self.opts.stats_url:
            counted = self._server_requests(ctx)
            if counted is not None:
                sample["server_requests"] = counted
                sample["stats_reads"] = self.stats_reads
        if self.agent and snap.processes:
            self.seq += 1
            sample["seq"] = self.seq
            # Profiles from the processes that do not fork (workers, a single-process server) only:
            # see the agent's read_trigger.
            profiled = sorted(p.pid for p in snap.processes.values() if p.role in ("worker", "server"))
            answers, agentless = self._ask(ctx, set(snap.processes), profiled if profile else [])
            for pid in set(snap.processes) - set(answers):
                if pid in agentless:  # nothing there could answer: not a silence
                    sample["processes"][str(pid)]["agent"] = False
                else:  # running (it is in /proc) but silent: out of descriptors, hung, or busy for 10 s
                    sample["processes"][str(pid)]["answered"] = False
            for pid, a in answers.items():
                if str(pid) in sample["processes"]:
                    sample["processes"][str(pid)].update(allocated=a.allocated, heap=a.heap, profiled=a.profiled)
                    if a.coroutines is not None:
                        sample["processes"][str(pid)]["coroutines"] = a.coroutines
                    if a.role:  # Swoole's own word beats the process tree's guess (task workers)
                        sample["processes"][str(pid)]["role"] = a.role
        return sample

    def _server_requests(self, ctx: DriverContext) -> int | None:
        """The server's own request count (request_count of the JSON at --stats-url), as it says it:
        asanlab's reads of the URL are requests too (stats_reads says how many). A failure is said
        once and the soak goes on: it is extra evidence."""
        import requests as http

        try:
            self.stats_reads += 1
            answer = http.get(self.opts.stats_url, timeout=10)
            answer.raise_for_status()
            return int(answer.json()["request_count"])
        except (http.RequestException, ValueError, KeyError, TypeError) as e:
            if not self.stats_warned:
                self.stats_warned = True
                if isinstance(e, http.JSONDecodeError):
                    why = "its answer is not JSON"
                elif isinstance(e, http.RequestException):
                    why = str(e)[:200]
                else:
                    why = "its JSON has no whole-number request_count"
                ctx.reporter(Event("soak.warning", f"--stats-url {self.opts.stats_url}: {why}; "
                                                   "the server's own count is left out"))
            return None

    def _ask(self, ctx: DriverContext, pids: set[int],
             profile: list[int]) -> tuple[dict[int, memory.Answer], set[int]]:
        """Ask every agent for its counters, and the processes in `profile` for a live-heap profile.
        Returns the answers, and the processes where no agent runs (nobody was waiting for those)."""
        write_trigger(ctx.session.path / CONTROL_SUBDIR / TRIGGER,
                      trigger_record(self.seq, bool(profile), self.opts.profile_contexts, profile))
        # A profile is symbolized in the process: at -O0 with hundreds of stacks it takes seconds.
        deadline = time.monotonic() + (180 if profile else 10)
        answers: dict[int, memory.Answer] = {}
        agentless = {p for p in pids if not _has_agent(ctx.session, p)}
        next_check = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for pid in pids - set(answers):
                for a in memory.parse_answers(_agent_text(ctx.session, f"answers.{pid}")):
                    if a.seq == self.seq:
                        answers[pid] = a
            if set(answers) >= pids - agentless or ctx.stop.is_set():
                break
            if time.monotonic() > next_check:
                # A worker that exits (max_request, a crash) will never answer: stop waiting for it.
                pids = {p for p in pids if p in answers or p in _alive(ctx.container)}
                agentless = {p for p in agentless if not _has_agent(ctx.session, p)}  # one just forked
                next_check = time.monotonic() + 1.0
            time.sleep(0.05)
        agentless = {p for p in agentless & pids if p not in answers}
        for pid in sorted(agentless - self.agentless_said):
            self.agentless_said.add(pid)
            ctx.reporter(Event("soak.warning", f"pid {pid} runs PHP without the agent (its environment or the way "
                                               "it was started left it out): its heap is not counted"))
        missing = pids - set(answers) - agentless
        if missing:
            ctx.reporter(Event("soak.warning", f"no agent answer from pid {', '.join(map(str, sorted(missing)))} "
                                               f"(sample {self.seq})"))
        return answers, agentless


TRIGGER = "trigger"
# The agents read the trigger in place (images/agent/asanlab-agent.c, read_trigger: at most 4095 bytes):
# every record has this size, so each write replaces the whole of the previous one.
TRIGGER_SIZE = 4000


def trigger_record(seq: int, profile: bool, contexts: int, pids: list[int]) -> bytes:
    """"seq profile contexts pids seq\n" padded with spaces: pids is "-" (every process) or the PIDs
    that print a profile. The sequence number ends the line too, so an agent that read the record
    while it was being written sees two different numbers and waits for the next read."""
    listed = [str(p) for p in pids] if profile else []
    while True:
        line = f"{seq} {int(profile)} {contexts} {','.join(listed) or '-'} {seq}\n"
        if len(line) <= TRIGGER_SIZE or len(listed) <= 1:
            return line.encode().ljust(TRIGGER_SIZE, b" ")
        listed.pop()  # hundreds of workers: the PIDs that do not fit print no profile this time


def write_trigger(path: Path, record: bytes) -> None:
    """Overwrite the trigger in place: the agents keep it open (an app out of descriptors is still
    sampled). Its folder is asanlab's, mounted read-only in the container: nothing the app made is
    there, and no link is followed all the same."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.pwrite(fd, record, 0)
    finally:
        os.close(fd)


def _exited(ctx: DriverContext) -> bool:
    """Whether the app's container has exited (or is already removed)."""
    from docker.errors import NotFound

    try:
        ctx.container.reload()
    except NotFound:
        return True
    return ctx.container.status in ("exited", "dead")


def _exit_of(ctx: DriverContext, lines: int = 5) -> str:
    """"exit status N; its last lines: ...": a real death said as one, with what the app said last."""
    status = ctx.container.attrs.get("State", {}).get("ExitCode")
    try:
        with untrusted.open_file(ctx.session.output_log, under=ctx.session.path, limit=untrusted.LOG_LIMIT) as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(max(0, size - 4096))
            tail = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()][-lines:]
    except (OSError, untrusted.UntrustedFileError):
        tail = []
    said = f"exit status {status}" if status is not None else "it exited"
    return said + ("; its last lines:\n    " + "\n    ".join(line[:300] for line in tail) if tail else "")


def _agent_text(s, name: str, limit: int = untrusted.SMALL_LIMIT * 16) -> str:
    """One of the agent's files (written in the app's container): "" when it is not there or not
    a regular file."""
    try:
        return untrusted.read_text(s.path / "agent" / name, under=s.path, limit=limit)
    except (OSError, untrusted.UntrustedFileError):
        return ""


def _has_agent(s, pid: int) -> bool:
    """Whether the agent started in this process: its thread creates answers.<pid> as it starts,
    before any question (images/agent/asanlab-agent.c, open_answers)."""
    try:
        return stat.S_ISREG(os.lstat(s.path / "agent" / f"answers.{pid}").st_mode)
    except OSError:
        return False


def _alive(container) -> set[int]:
    from docker.errors import APIError, NotFound

    try:
        code, out = container.exec_run(["sh", "-c", "cd /proc && echo [0-9]*"], environment={"LD_PRELOAD": ""})
    except APIError as e:
        # 409: the container stopped while an answer was awaited (the app exiting): nothing is alive.
        if isinstance(e, NotFound) or e.status_code == 409:
            return set()
        raise
    return {int(x) for x in (out or b"").decode().split() if x.isdigit()}


def soak(client, run_opts: RunOptions, opts: SoakOptions, *, agent_path: str | None,
         reporter: Reporter = null_reporter) -> RunResult:
    """Run the app with the soak's driver beside it."""
    loader = make_loader(opts.requests, opts.concurrency, opts.client)
    settings = opts.stored(agent_path, loader.name)
    companion = Companion(
        kind="soak", driver=Driver(opts, agent_path is not None, loader),
        env={"ASANLAB_AGENT_DIR": AGENT_DIR, "ASANLAB_AGENT_TRIGGER": f"{CONTROL_DIR}/{TRIGGER}"}
        if agent_path is not None else {},
        mounts={"agent": AGENT_DIR}, asan_options=SOAK_QUARANTINE, info={"soak": settings},
        controls={TRIGGER: trigger_record(0, False, opts.profile_contexts, [])} if agent_path is not None else {},
        php_origins=False)  # its cost on every allocation would slow the soak's detection
    # A soak is about rates over 100k requests: the fast unwinder unless --full-stacks, with or
    # without the agent (measured: the slow one costs 3-5x the requests per second).
    run_opts = replace(run_opts, agent=agent_path, companion=companion, full_stacks=opts.full_stacks)
    try:
        return run(client, run_opts, reporter=reporter)
    finally:
        loader.close()


def read_samples(s) -> list[dict]:
    out = []
    try:
        with untrusted.open_file(s.path / "soak" / "samples.jsonl", under=s.path, limit=untrusted.JSON_LIMIT) as f:
            for line in f:
                try:
                    sample = json.loads(line)
                except ValueError:  # a line cut by an interruption
                    continue
                if isinstance(sample, dict):
                    out.append(sample)
    except FileNotFoundError:
        pass
    return out


def read_profiles(s, samples: list[dict]) -> dict[int, list[tuple[int, memory.Profile]]]:
    """Each process's live-heap profiles with the request count each was taken at: the k-th
    profile in its sanitizer log answers its k-th profiled request."""
    requests_at = {smp["seq"]: smp["requests"] for smp in samples if "seq" in smp}
    out: dict[int, list[tuple[int, memory.Profile]]] = {}
    for f in untrusted.files(s.path / "agent", prefix="answers."):
        pid = int(f.suffix[1:]) if f.suffix[1:].isdigit() else None
        log = s.sanitizer_dir / f"sanitizer.{pid}"
        if pid is None or not untrusted.is_file(log):
            continue
        asked = [a.seq for a in memory.parse_answers(_agent_text(s, f.name)) if a.profiled]
        try:
            with untrusted.open_file(log, under=s.path) as fh:
                profiles = memory.parse_profiles(io.TextIOWrapper(fh, errors="replace"))
        except (OSError, untrusted.UntrustedFileError):
            continue
        out[pid] = [(requests_at[seq], p) for seq, p in zip(asked, profiles) if seq in requests_at]
    return out


def read_php_heaps(s, samples: list[dict]) -> dict[int, list[tuple[int, list]]]:
    """Each process's PHP heap sites (the agent's php-heap.<pid>) with the request count each was
    taken at."""
    return _read_agent_blocks(s, samples, "php-heap", php_stack.parse_heap)


def read_bookkeeping(s, samples: list[dict]) -> dict[int, list[tuple[int, int]]]:
    """What the agent's sampler kept in memory in each process, by request count."""
    return _read_agent_blocks(s, samples, "php-heap", php_stack.parse_heap_bookkeeping)


def read_php_census(s, samples: list[dict]) -> dict[int, list[tuple[int, list]]]:
    """Each process's PHP heap census (the agent's php-census.<pid>) with the request count of the
    checkpoint that asked for it (it is taken at the next request)."""
    return _read_agent_blocks(s, samples, "php-census", php_stack.parse_census)


def _read_agent_blocks(s, samples: list[dict], prefix: str, parse) -> dict[int, list[tuple[int, list]]]:
    """The agent's PREFIX.<pid> files, parsed into (sequence number, items) blocks, each with the
    request count of the sample that asked for it."""
    requests_at = {smp["seq"]: smp["requests"] for smp in samples if "seq" in smp}
    out: dict[int, list[tuple[int, list]]] = {}
    for f in untrusted.files(s.path / "agent", prefix=f"{prefix}."):
        if not f.suffix[1:].isdigit():
            continue
        try:
            with untrusted.open_file(f, under=s.path) as fh:
                blocks = parse(fh.read(php_stack.MAX_FILE_BYTES).decode(errors="replace"))
        except (OSError, untrusted.UntrustedFileError):
            continue
        out[int(f.suffix[1:])] = [(requests_at[seq], items) for seq, items in blocks if seq in requests_at]
    return out


def soak_result(s, *, plots: bool = True) -> dict | None:
    """Judge a stored soak (again): writes soak/analysis.json, samples.csv and memory.png."""
    from . import plot, report as soak_report

    samples = read_samples(s)
    if not samples:
        return None
    opts = s.data.get("soak") or {}
    criteria = SoakOptions.stored_criteria(opts)
    load_file = s.path / "soak" / "load.json"
    try:
        load = json.loads(untrusted.read_text(load_file, under=s.path))
    except FileNotFoundError:
        load = None
    except ValueError as e:
        raise UsageError(f"{load_file}: not readable JSON ({e})") from None
    from ..reports.export import app_entry_of

    entry = app_entry_of(s.data)
    analysis = soak_report.analyse(samples, read_profiles(s, samples), criteria,
                                   budget=opts.get("budget", DEFAULT_BUDGET), load=load,
                                   app=f"{APP_DIR}/{entry}" if entry else None,
                                   php_heaps=read_php_heaps(s, samples), census=read_php_census(s, samples),
                                   bookkeeping=read_bookkeeping(s, samples),
                                   agent=bool(opts.get("agent")), emfile=_out_of_descriptors(s))
    folder = s.path / "soak"
    try:
        atomic_write(folder / "analysis.json", (json.dumps(analysis, indent=2) + "\n").encode())
        atomic_write(folder / "samples.csv", _csv(samples).encode())
        if plots:
            plot.png(samples, analysis, folder / "memory.png")
    except OSError:
        pass  # a read-only copy (a CI artifact): the analysis is printed all the same
    return analysis


def _out_of_descriptors(s) -> dict | None:
    """What the app's output says of running out of descriptors (counts.out_of_descriptors)."""

    from .counts import out_of_descriptors

    try:
        with untrusted.open_file(s.output_log, under=s.path, limit=untrusted.LOG_LIMIT) as raw:
            return out_of_descriptors(io.TextIOWrapper(raw, errors="replace"))
    except (OSError, untrusted.UntrustedFileError):
        return None


def _csv(samples: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    cols = ["requests", "time", "pid", "role", "allocated", "heap", "uss", "pss", "rss_anon", "rss", "cgroup"]
    w = csv.writer(buf)
    w.writerow(cols)
    for smp in samples:
        for pid, p in smp["processes"].items():
            w.writerow([smp["requests"], f"{smp['time']:.3f}", pid, p.get("role"), p.get("allocated"), p.get("heap"),
                        p.get("uss"), p.get("pss"), p.get("rss_anon"), p.get("rss"), smp.get("cgroup")])
    return buf.getvalue()
