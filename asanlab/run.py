"""`asanlab run`: the app in an instrumented container, every sanitizer report captured, a session kept.

Whatever ends the run (the app exiting, Ctrl-C, SIGTERM, --timeout, an error), the app gets
SIGTERM and a grace period so LeakSanitizer can write its reports, the logs are collected, the
session is saved and the container is removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import containers
from . import session as sessions
from .errors import InfraError, UsageError
from .events import Event, Reporter, null_reporter
from .findings import Category, Finding, category, failing
from .layout import APP_DIR, CONFIG_DIR, LOG_DIR, PHP_STACK_DIR, STATE_DIR
from .reports import _starts_report, parse

# Prepended to the app (see asanlab/data/sigterm.php): a plain script as the container's PID 1
# would ignore SIGTERM, and only a normal exit runs LeakSanitizer.
SIGTERM_PREPEND = f"{CONFIG_DIR}/sigterm.php"
ABNORMAL_EXIT = re.compile(r"(worker|task_worker|manager)?\(?pid=(?P<pid>\d+), id=(?P<id>\d+)\)? abnormal exit, "
                           r"status=(?P<status>-?\d+), signal=(?P<signal>\d+)")
SECRET_KEY = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE)", re.I)

# What PHP needs under ASan (FIELD-NOTES): the system allocator instead of Zend's arenas, so every
# allocation is visible; modules kept loaded, so stacks symbolize at exit.
PHP_ENV = {"USE_ZEND_ALLOC": "0", "USE_TRACKED_ALLOC": "1", "ZEND_DONT_UNLOAD_MODULES": "1"}
ASAN_DEFAULTS = {
    "log_path": f"{LOG_DIR}/sanitizer",  # one file per process: sanitizer.<pid>
    "detect_leaks": 1,
    "symbolize": 1,
    "dedup_token_length": 3,
    "print_scariness": 1,
    "handle_abort": 1,
    # Allocation stacks through code without frame pointers (libffi, so every FFI call) stop after
    # one frame with the fast unwinder; the slow one reaches the PHP function that allocated.
    "fast_unwind_on_malloc": 0,
}
ORIGIN_LSAN_OPTIONS = {"report_objects": 1}
# ASan and UBSan share one log_path setting (the last one read wins): give both the same.
UBSAN_DEFAULTS = {"log_path": f"{LOG_DIR}/sanitizer", "print_stacktrace": 1}


@dataclass
class RunOptions:
    app: Path
    image: str
    args: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: float | None = None
    grace: float = 15.0
    recipe: object | None = None  # the Recipe, when the run came from one
    image_id: str | None = None
    # asanlab's agent in the image (its org.asanlab.agent label), preloaded into PHP: it writes the
    # PHP backtrace of every ASan error (images/agent). None: an image without it, reports stay C only.
    agent: str | None = None
    suppressions: list[str] = field(default_factory=list)  # leak:PATTERN rules from --suppressions
    # Keep what clients sent the app (asanlab/proxy.py) on its first published TCP port, in the
    # session's traffic/ folder, for `asanlab reproduce`.
    record: bool = False
    companion: "Companion | None" = None  # a command working beside the app (soak), else a plain run


@dataclass(frozen=True)
class Companion:
    """What a command that works beside the app (`asanlab soak`) adds to a run. `run` knows it only
    through these fields."""

    kind: str  # the session's kind: "soak"
    driver: Callable[["DriverContext"], None]  # runs while the app runs; its return ends the run
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # session subfolder -> container path, read-write
    asan_options: dict = field(default_factory=dict)  # its own ASAN_OPTIONS defaults
    info: dict = field(default_factory=dict)  # more for session.json
    # With the agent: record which PHP code allocated each block, so that each LeakSanitizer leak
    # names its PHP line (images/agent/php-origin.c). A cost on every allocation.
    php_origins: bool = True


@dataclass
class DriverContext:
    container: object
    session: sessions.Session
    stop: threading.Event  # set when the user interrupts: stop soon
    reporter: Reporter


@dataclass
class RunResult:
    session: sessions.Session
    findings: list[Finding]
    exit_code: int | None
    stop_reason: str


# Seconds after asanlab's own stop (timeout + grace) when the container stops itself: asanlab,
# alive, is done by then.
DEADLINE_MARGIN = 10


def options_string(options: dict) -> str:
    return ":".join(f"{k}={v}" for k, v in options.items())


def parse_ports(specs: list[str]) -> dict[str, tuple[str, int]]:
    """-p [IP:]HOST:CONTAINER[/PROTO]. Without an IP, bind to 127.0.0.1: an ASan debug build is no
    service to expose to the network by surprise."""
    out: dict[str, tuple[str, int]] = {}
    for spec in specs:
        m = re.fullmatch(r"(?:(?P<ip>[0-9.]+|\[[0-9a-f:]+\]):)?(?P<host>\d+):(?P<cont>\d+)(?:/(?P<proto>tcp|udp))?", spec)
        if not m:
            raise UsageError(f"-p {spec}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. -p 9501:9501")
        ip = m.group("ip") or "127.0.0.1"
        try:
            # Docker binds every address when it cannot use the one given: a typo must stop here.
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise UsageError(f"-p {spec}: {ip} is not an IP address") from None
        host, cont = int(m.group("host")), int(m.group("cont"))
        for port in (host, cont):
            if not 0 < port < 65536:
                raise UsageError(f"-p {spec}: port {port} is out of range (1-65535)")
        out[f"{cont}/{m.group('proto') or 'tcp'}"] = (ip.strip("[]"), host)
    return out


def parse_env(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"-e {spec}: expected KEY=VALUE")
        out[key] = value
    return out


def environment(recipe, user_env: dict[str, str], suppressions: bool,
                asan_options: dict | None = None, *, lsan_options: dict | None = None) -> dict[str, str]:
    """The app's environment. Precedence: asanlab's defaults, then `asan_options` and `lsan_options`
    (a command's own, e.g. soak's), then the recipe's runtime options, then the user's -e."""
    asan = {**ASAN_DEFAULTS, **(asan_options or {})}
    lsan: dict = dict(lsan_options or {})
    ubsan = dict(UBSAN_DEFAULTS)
    if recipe is not None:
        asan.update(recipe.runtime.asan_options)
        lsan.update(recipe.runtime.lsan_options)
        ubsan.update(recipe.runtime.ubsan_options)
        if not recipe.sanitizers.leak:
            asan["detect_leaks"] = 0
    # `-e ASAN_OPTIONS=...` (and LSAN_, UBSAN_) adds to these options rather than replacing them.
    for name, table in (("ASAN_OPTIONS", asan), ("LSAN_OPTIONS", lsan), ("UBSAN_OPTIONS", ubsan)):
        if name in user_env:
            user_env = dict(user_env)
            for item in re.split(r"[:,]", user_env.pop(name)):
                key, eq, value = item.partition("=")
                if key and eq:
                    table[key] = value
    # The per-run log folder is what makes capture work: it must survive any override.
    asan["log_path"], ubsan["log_path"] = ASAN_DEFAULTS["log_path"], UBSAN_DEFAULTS["log_path"]
    if suppressions:
        lsan["suppressions"] = f"{CONFIG_DIR}/lsan.supp"
    env = {**PHP_ENV, "ASAN_OPTIONS": options_string(asan), "UBSAN_OPTIONS": options_string(ubsan)}
    if lsan:
        env["LSAN_OPTIONS"] = options_string(lsan)
    env.update(user_env)
    return env


def _masked(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if SECRET_KEY.search(k) else v) for k, v in env.items()}


class _Watcher(threading.Thread):
    """Tells the user about each sanitizer report as soon as its process has written it.

    Reads only what each log gained since the last look, and holds only the report being written:
    a soak's logs grow by live-heap profiles of megabytes, which are not reports and are skipped.
    """

    def __init__(self, folder: Path, reporter: Reporter) -> None:
        super().__init__(daemon=True)
        self.folder, self.reporter = folder, reporter
        self.state: dict[str, _LogState] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.3):
            self.scan()

    def scan(self) -> None:
        if not self.folder.exists():
            return
        for f in sorted(self.folder.iterdir()):
            st = self.state.setdefault(f.name, _LogState())
            try:
                with open(f, "rb") as fh:
                    fh.seek(st.offset)
                    data = fh.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n")
            if end < 0:
                continue
            st.offset += end + 1
            for line in data[:end].decode(errors="replace").split("\n"):
                starts = (line[:2] == "==" or "runtime error: " in line) and _starts_report(line)
                if starts and st.block:
                    self._announce(f.name, st, final=True)
                if starts or st.block:
                    st.block.append(line)
            if st.block:
                self._announce(f.name, st, final=False)

    def _announce(self, name: str, st: "_LogState", final: bool) -> None:
        reports = [r for r in parse("\n".join(st.block), name) if r.complete]
        new = reports[st.announced:]
        st.announced = len(reports)
        if final:
            st.block, st.announced = [], 0
        errors = [r for r in new if not r.is_leak]
        for r in errors:
            where = next((fr.describe() for fr in r.frames if fr.function), "")
            self.reporter(Event("run.finding", f"pid {r.pid}: {r.tool}: {r.kind} {where}".rstrip(),
                                {"pid": r.pid, "kind": r.kind, "file": name}))
        leaks = [r for r in new if r.is_leak]
        if leaks:
            runtime = [r for r in leaks if category(r) is Category.LEAK]
            total = sum(r.leaked_bytes or 0 for r in leaks)
            self.reporter(Event("run.finding",
                                f"pid {leaks[0].pid}: LeakSanitizer: {len(leaks)} leak record(s), {total} bytes; "
                                f"{len(runtime)} outside start-up",
                                {"pid": leaks[0].pid, "kind": "leak", "records": len(leaks),
                                 "runtime": len(runtime), "file": name}))


@dataclass
class _LogState:
    offset: int = 0  # bytes read, up to the last complete line
    block: list[str] = field(default_factory=list)  # the lines of the report being written
    announced: int = 0  # complete reports of that block already announced


class _Output(threading.Thread):
    """Copies the container's output to raw/output.log verbatim and emits it line by line."""

    def __init__(self, stream, path: Path, reporter: Reporter) -> None:
        super().__init__(daemon=True)
        self.stream, self.path, self.reporter = stream, path, reporter
        self.abnormal: list[dict] = []

    def run(self) -> None:
        pending = b""
        with open(self.path, "ab") as out:
            try:
                for chunk in self.stream:
                    out.write(chunk)
                    out.flush()
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        self._line(raw.decode(errors="replace"))
            except Exception as e:  # the stream ends with the container; a broken stream loses nothing on disk
                self.reporter(Event("run.warning", f"output stream ended: {e.__class__.__name__}"))
            if pending:
                self._line(pending.decode(errors="replace"))

    def _line(self, line: str) -> None:
        m = ABNORMAL_EXIT.search(line)
        if m:
            self.abnormal.append({"line": line.strip(), "pid": int(m.group("pid")), "status": int(m.group("status")),
                                  "signal": int(m.group("signal"))})
        self.reporter(Event("run.output", line))


class _Driver(threading.Thread):
    """Runs the soak's work beside the app; when it returns (or fails) the run stops."""

    def __init__(self, work: Callable[[DriverContext], None], ctx: DriverContext, stop: "_Stop") -> None:
        super().__init__(daemon=True)
        self.work, self.ctx, self.stop = work, ctx, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work(self.ctx)
            self.stop.request("finished")
        except BaseException as e:
            self.error = e
            self.stop.request("error")


class _Stop:
    """SIGINT/SIGTERM ask the run to stop (gracefully); a second one skips the grace period."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.hurry = False
        self.event = threading.Event()
        self.saved: dict = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            self.hurry = True
        self.request("interrupted" if signum == signal.SIGINT else "terminated")

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


def run(client, opts: RunOptions, *, reporter: Reporter = null_reporter) -> RunResult:
    from docker.errors import DockerException

    app = opts.app.resolve()
    if not app.is_file():
        raise UsageError(f"{opts.app}: no such PHP file")
    user_env = parse_env(opts.env)
    ports = parse_ports(opts.ports)
    recipe = opts.recipe
    suppressions = (list(recipe.runtime.suppressions) if recipe is not None else []) + opts.suppressions
    extra = opts.companion
    origins = bool(opts.agent) and (extra is None or extra.php_origins)
    # report_objects: LeakSanitizer lists each leaked object's address, joined with the agent's
    # php-origin.<pid> on the host (asanlab/php_stack.py).
    env = environment(recipe, user_env, bool(suppressions), extra.asan_options if extra else None,
                      lsan_options=ORIGIN_LSAN_OPTIONS if origins else None)
    mounts = {"state": STATE_DIR, **(extra.mounts if extra else {})}
    if opts.agent:
        preload = " ".join(p for p in (opts.agent, env.get("LD_PRELOAD")) if p)
        env.update({"LD_PRELOAD": preload, "ASANLAB_PHP_TRACE_DIR": PHP_STACK_DIR})
        if origins:
            env["ASANLAB_PHP_ORIGINS"] = "1"
        mounts[sessions.PHP_STACK_SUBDIR] = PHP_STACK_DIR
    if opts.agent and opts.timeout:
        # Kept inside the container too, for when asanlab is killed: the agent in PID 1 stops the
        # app a little after asanlab would have (images/agent/asanlab-agent.c, check_deadline).
        env.update({"ASANLAB_DEADLINE": f"{time.time() + opts.timeout + opts.grace + DEADLINE_MARGIN:.0f}",
                    "ASANLAB_DEADLINE_GRACE": f"{opts.grace:.0f}"})
    env.update(extra.env if extra else {})
    command = ["php", "-d", f"auto_prepend_file={SIGTERM_PREPEND}", f"{APP_DIR}/{app.name}", *opts.args]
    recover_orphans(client, reporter)  # a killed asanlab's container would hold its port and its session
    s = sessions.create({
        "kind": extra.kind if extra else "run", "app": str(app), "command": command, "image": {"ref": opts.image, "id": opts.image_id},
        "recipe": recipe.raw if recipe is not None else None,
        "recipe_digest": recipe.digest() if recipe is not None else None,
        "recipe_path": str(recipe.path) if recipe is not None and recipe.path else None,
        "environment": _masked(env), "user_env": _masked(user_env), "args": list(opts.args),
        "ports": {k: list(v) for k, v in ports.items()},
        "timeout": opts.timeout, "grace": opts.grace, "owner": containers.owner(), **(extra.info if extra else {}),
    })
    config = s.path / "config"
    config.mkdir()
    (config / "sigterm.php").write_bytes((Path(__file__).parent / "data" / "sigterm.php").read_bytes())
    if suppressions:
        (config / "lsan.supp").write_text("\n".join(suppressions) + "\n")
    volumes = {str(app.parent): {"bind": APP_DIR, "mode": "ro"},
               str(s.sanitizer_dir): {"bind": LOG_DIR, "mode": "rw"},
               str(config): {"bind": CONFIG_DIR, "mode": "ro"}}
    for sub, target in mounts.items():
        (s.path / sub).mkdir(parents=True, exist_ok=True)
        volumes[str(s.path / sub)] = {"bind": target, "mode": "rw"}
    reporter(Event("run.session", f"session {s.id} in {s.path}", {"id": s.id, "path": str(s.path)}))
    recorded = _recorded_port(ports, reporter) if opts.record else None
    if recorded is not None:  # Docker publishes on a free loopback port; the recorder takes the user's
        ports = {**ports, recorded[0]: ("127.0.0.1", None)}
    recorder = None
    stop_reason, exit_code, error = "exited", None, None
    watcher = _Watcher(s.sanitizer_dir, reporter)
    output: _Output | None = None
    driver: _Driver | None = None
    try:
        with _Stop() as stop, containers.temporary(
            client, opts.image, role="run", session=s.id, session_path=str(s.path), command=command,
            working_dir=APP_DIR,
            environment=env, ports=ports or None,
            volumes=volumes,
            # ptrace is what LeakSanitizer's final check uses to suspend threads on kernels or seccomp
            # profiles that forbid it by default; nothing else is added.
            cap_add=["SYS_PTRACE"],
        ) as container:
            s.data["container"] = container.name
            s.save()
            # Attached before it starts, as `docker run` does: the output comes from the container's
            # streams, not from the daemon's log files, whose rotation (max-size) would end a
            # followed log stream early and lose the rest.
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
            try:
                container.start()
            except DockerException as e:
                raise InfraError(f"the container did not start: {getattr(e, 'explanation', None) or e}") from None
            if recorded is not None:
                recorder = _start_recorder(container, recorded, s, reporter)
            output = _Output(stream, s.output_log, reporter)
            output.start()
            watcher.start()
            deadline = time.monotonic() + opts.timeout if opts.timeout else None
            reporter(Event("run.started", f"running {' '.join(command)} in {opts.image}", {"container": container.name}))
            if extra is not None:
                driver = _Driver(extra.driver, DriverContext(container, s, stop.event, reporter), stop)
                driver.start()
            while True:
                container.reload()
                if container.status in ("exited", "dead"):
                    break
                if deadline and time.monotonic() > deadline:
                    stop.request("timeout")
                if stop.event.wait(0.25):
                    stop_reason = stop.reason or "interrupted"
                    _stop(container, 1.0 if stop.hurry else opts.grace, stop, reporter,
                          started=s.path / "state" / "php-started")
                    break
            exit_code = container.wait(timeout=60).get("StatusCode")
            output.join(timeout=10)
    except BaseException as e:  # errors and a second interrupt still save what was captured
        stop_reason = "error"
        error = e
    finally:
        if driver is not None:
            stop.event.set()  # the app is gone or stopping: the driver must not wait for it
            driver.join(timeout=30)
            if driver.error is not None and error is None:
                error = driver.error
        if recorder is not None:
            recorder.stop()
            s.data["traffic"] = {**s.data.get("traffic", {}), **_traffic_summary(recorder, s, reporter)}
        watcher.stop.set()
        if watcher.is_alive():
            watcher.join(timeout=5)
        watcher.scan()
        findings = _close(s, status="failed" if error is not None else "finished", stop_reason=stop_reason,
                          exit_code=exit_code, error=str(error) if error is not None else None,
                          abnormal=output.abnormal if output else [])
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise InfraError(f"interrupted; the session was saved in {s.path}")
        if isinstance(error, DockerException):
            raise InfraError(f"docker: {getattr(error, 'explanation', None) or error}; "
                             f"the session was saved in {s.path}") from None
        raise error
    return RunResult(s, findings, exit_code, stop_reason)


def _recorded_port(ports: dict, reporter: Reporter) -> tuple[str, tuple[str, int]] | None:
    """The published port whose traffic is recorded: the first TCP one, as (container port, where
    the user asked for it)."""
    tcp = [k for k in ports if k.endswith("/tcp")]
    if not tcp:
        reporter(Event("run.warning", "--record: no TCP port is published (-p): nothing to record"))
        return None
    if len(tcp) > 1:
        reporter(Event("run.warning", f"--record: only {tcp[0]} is recorded; {', '.join(tcp[1:])} pass unrecorded"))
    return tcp[0], ports[tcp[0]]


def _start_recorder(container, recorded: tuple[str, tuple[str, int]], s: sessions.Session, reporter: Reporter):
    from .proxy import Recorder
    from .traffic import FILE

    cport, (ip, port) = recorded
    container.reload()
    published = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(cport) or []
    if not published:
        raise InfraError(f"--record: Docker did not publish {cport}")
    recorder = Recorder((ip, port), ("127.0.0.1", int(published[0]["HostPort"])), s.path / "traffic" / FILE)
    recorder.start()
    ip, port = recorder.listen
    s.data["traffic"] = {"port": cport, "listen": f"{ip}:{port}", "file": f"traffic/{FILE}"}
    s.save()
    reporter(Event("run.recording", f"recording what clients send to {ip}:{port} (-> {cport}) in {s.path / 'traffic'}",
                   {"port": cport, "listen": f"{ip}:{port}"}))
    return recorder


def _traffic_summary(recorder, s: sessions.Session, reporter: Reporter) -> dict:
    """What was recorded, and the requests the app never answered: the one a worker died on is
    among them."""
    from . import traffic

    requests = traffic.all_requests(traffic.read(recorder.out))
    unanswered = [f"{r.line} (connection {r.connection})" for r in requests if r.status is None]
    reporter(Event("run.recorded", f"recorded {len(requests)} request(s) on {recorder.connections} connection(s)"
                   + (f"; never answered: {', '.join(unanswered[:5])}" if unanswered else ""),
                   {"requests": len(requests), "unanswered": len(unanswered)}))
    return {"connections": recorder.connections, "bytes_in": recorder.bytes_in, "requests": len(requests),
            "unanswered": unanswered[:100]}


def _close(s: sessions.Session, *, status: str, stop_reason: str, exit_code: int | None, error: str | None,
           abnormal: list[dict]) -> list[Finding]:
    """The session's end: its reports read once more, counts and findings saved."""
    reports, findings = sessions.analyse(s)
    s.data.update({
        "status": status, "ended": sessions.now(), "stop_reason": stop_reason, "exit_code": exit_code,
        "error": error, "abnormal_exits": abnormal, "processes": _processes(reports),
        "counts": {"reports": len(reports), "findings": len(findings), "failing": len(failing(findings))},
    })
    s.save()
    s.save_findings(findings)
    return findings


def recover_orphans(client, reporter: Reporter = null_reporter) -> list[str]:
    """Stop the containers of runs whose asanlab was killed, as a run stops (SIGTERM, then the
    session's grace for LeakSanitizer's reports), keep the app's whole output, close their sessions
    (stop reason "orphaned") and remove the containers. Returns the sessions closed."""
    from docker.errors import DockerException
    from requests import RequestException

    closed = []
    for c in containers.orphans(client):
        path = Path(c.labels.get(containers.SESSION_PATH, ""))
        s = None
        if path.is_absolute() and (path / "session.json").is_file():
            with contextlib.suppress(sessions.SessionError):
                s = sessions.load(str(path))
        grace = float((s.data.get("grace") if s else None) or 15.0)
        reporter(Event("run.orphan", f"container {c.name} outlived the asanlab that started it: stopping it"
                                     + (f" and closing session {s.id}" if s else "")))
        try:
            stopper = _Stop()
            stopper.request("orphaned")
            if c.status == "running":
                _stop(c, grace, stopper, reporter)
            # A container created but never started has no exit to wait for.
            exit_code = c.wait(timeout=60).get("StatusCode") if c.status != "created" else None
            if s is not None:
                # The owner copied the output until it died; the daemon still holds all of it.
                logs = c.logs(stdout=True, stderr=True)
                if len(logs) > (s.output_log.stat().st_size if s.output_log.exists() else 0):
                    s.output_log.parent.mkdir(parents=True, exist_ok=True)
                    s.output_log.write_bytes(logs)
        except (DockerException, RequestException) as e:
            reporter(Event("run.warning", f"container {c.name}: {e}"))
            exit_code = None
        if s is not None and s.data.get("status") == "running":
            _close(s, status="finished", stop_reason="orphaned", exit_code=exit_code,
                   error="asanlab was killed during the run; stopped and closed by a later asanlab", abnormal=[])
            closed.append(s.id)
        containers.remove(c)
    # Sessions whose asanlab died before its container existed (or after it was removed).
    for sid in sessions.list_ids():
        try:
            s = sessions.load(sid)
        except sessions.SessionError:
            continue
        if s.data.get("status") == "running" and containers.owner_is_gone(s.data.get("owner") or ""):
            _close(s, status="finished", stop_reason="orphaned", exit_code=None,
                   error="asanlab was killed during the run; closed by a later asanlab", abnormal=[])
            reporter(Event("run.orphan", f"session {s.id} was left running by a killed asanlab: closed"))
            closed.append(s.id)
    return closed


# How long a stop waits for PHP to start (sigterm.php's mark) before it sends SIGTERM anyway.
START_WAIT = 10.0


def _stop(container, grace: float, stop: _Stop, reporter: Reporter, started: Path | None = None) -> None:
    reporter(Event("run.stopping", f"stopping ({stop.reason}): SIGTERM, then up to {grace:.0f} s for "
                                   "LeakSanitizer to write its reports"))
    # PID 1 drops a signal it has no handler for, and PHP's own start-up handler re-raises SIGTERM
    # with the default action: a SIGTERM sent before sigterm.php ran would be lost, and with it the
    # leak report. sigterm.php marks the moment; an app that never gets there is stopped anyway.
    wait_until = time.monotonic() + min(START_WAIT, grace)
    while started is not None and not started.exists() and time.monotonic() < wait_until and not stop.hurry:
        container.reload()
        if container.status in ("exited", "dead"):
            return
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        container.kill(signal="SIGTERM")
    end = time.monotonic() + grace
    while time.monotonic() < end and not stop.hurry:
        container.reload()
        if container.status in ("exited", "dead"):
            return
        time.sleep(0.2)
    reporter(Event("run.warning", "the app did not exit within the grace period: killed (its leak reports are lost)"))
    with contextlib.suppress(Exception):
        container.kill(signal="SIGKILL")


def _processes(reports) -> list[dict]:
    by_pid: dict[int, dict] = {}
    for r in reports:
        if r.pid is None:
            continue
        p = by_pid.setdefault(r.pid, {"pid": r.pid, "reports": 0, "log": r.source})
        p["reports"] += 1
    return [by_pid[k] for k in sorted(by_pid)]

