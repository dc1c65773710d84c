"""`asanlab run`: the app in an instrumented container, every sanitizer report captured, a session kept.

Whatever ends the run (the app exiting, Ctrl-C, SIGTERM, --timeout, an error), the app gets
SIGTERM and a grace period so LeakSanitizer can write its reports, the logs are collected, the
session is saved and the container is removed.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import containers
from .. import session as sessions
from ..errors import InfraError, UsageError
from ..events import Event, Reporter, null_reporter
from ..layout import APP_DIR, CONFIG_DIR, CONTROL_DIR, HANDLER_DIR, LOG_DIR, PHP_STACK_DIR, STATE_DIR
from .environment import FAST_STACKS, ORIGIN_LSAN_OPTIONS, SIGTERM_PREPEND, environment, masked
from .options import DriverContext, RunOptions, RunResult, parse_env, parse_ports
from .recording import recorded_port, start_recorder, traffic_summary
from .session_end import close_session
from .stop import StopRequest, recover_orphans, stop_container
from . import valgrind
from .watch import CompanionThread, OutputCopier, Watcher

CRASH_GDB_SCRIPT = "crash-gdb.py"  # asanlab/data: what gdb prints of a crash the agent caught

# Seconds after asanlab's own stop (timeout + grace) when the container stops itself: asanlab,
# alive, is done by then.
DEADLINE_MARGIN = 10


def run(client, opts: RunOptions, *, reporter: Reporter = null_reporter) -> RunResult:
    # SIGINT and SIGTERM are asanlab's from before the session exists: one that comes before the
    # container does still stops the app gracefully and closes the session (Python's own SIGINT
    # would raise anywhere, and a process started in the background ignores SIGINT until then).
    with StopRequest() as stop:
        return _run(client, opts, stop, reporter)


def _run(client, opts: RunOptions, stop: StopRequest, reporter: Reporter) -> RunResult:
    from docker.errors import DockerException
    from requests import RequestException

    app = opts.app.resolve()
    if not app.is_file():
        raise UsageError(f"{opts.app}: no such PHP file")
    user_env = parse_env(opts.env)
    ports = parse_ports(opts.ports)
    suppressions = (list(opts.recipe.runtime.suppressions) if opts.recipe is not None else []) + opts.suppressions
    env, mounts = _environment(opts, user_env, bool(suppressions))
    command = ["php", "-d", f"auto_prepend_file={SIGTERM_PREPEND}", f"{APP_DIR}/{app.name}", *opts.args]
    if opts.valgrind:
        command = valgrind.command(command)
    recover_orphans(client, reporter)  # a killed asanlab's container would hold its port and its session
    s = _new_session(opts, app, command, env, user_env, ports)
    handler = _crash_handler(opts)
    volumes = _volumes(s, app, suppressions, mounts, under_valgrind=opts.valgrind,
                       libraries=handler.folder if handler is not None else None,
                       controls=opts.companion.controls if opts.companion is not None else {})
    reporter(Event("run.session", f"session {s.id} in {s.path}", {"id": s.id, "path": str(s.path)}))
    recorded = recorded_port(ports, reporter) if opts.record else None
    if recorded is not None:  # Docker publishes on a free loopback port; the recorder takes the user's
        ports = {**ports, recorded[0]: ("127.0.0.1", None)}
    recorder = None
    stop_reason, exit_code, error = "exited", None, None
    watcher = Watcher(s.sanitizer_dir, reporter)
    output: OutputCopier | None = None
    driver: CompanionThread | None = None
    try:
        with containers.temporary(
            client, opts.image, role="run", session=s.id, session_path=str(s.path), command=command,
            working_dir=APP_DIR,
            environment=env, ports=ports or None,
            volumes=volumes,
            # ptrace is what LeakSanitizer's final check uses to suspend threads on kernels or seccomp
            # profiles that forbid it by default; nothing else is added. MKNOD is taken away: a device
            # node the app made in a read-write mount would be a node on the host's disk, which host
            # root could open.
            cap_add=["SYS_PTRACE"], cap_drop=["MKNOD"],
        ) as container:
            s.data["container"] = container.name
            s.save()
            # Attached before it starts, as `docker run` does: the output comes from the container's
            # streams, not from the daemon's log files, whose rotation (max-size) would end a
            # followed log stream early and lose the rest.
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            try:
                container.start()
            except DockerException as e:
                raise InfraError(f"the container did not start: {getattr(e, 'explanation', None) or e}") from None
            if recorded is not None:
                recorder = start_recorder(container, recorded, s, reporter)
            output = OutputCopier(stream, s.output_log, reporter, on_write_error=lambda: stop.request("disk-full"))
            output.start()
            watcher.start()
            reporter(Event("run.started", f"running {' '.join(command)} in {opts.image}", {"container": container.name}))
            if opts.companion is not None:
                driver = CompanionThread(opts.companion.driver, DriverContext(container, s, stop.event, reporter), stop)
                driver.start()
            stop_reason = _until_it_ends(container, opts, stop, s, reporter)
            exit_code = container.wait(timeout=60).get("StatusCode")
            output.join(timeout=10)
            if output.symbolizer_errors:
                reporter(Event("run.warning", f"llvm-symbolizer could not read {output.symbolizer_errors} file(s) it was "
                                              "asked about ([stack], or a module gone since): those frames stay "
                                              "unsymbolized; its lines are in raw/output.log"))
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
            try:
                s.data["traffic"] = {**s.data.get("traffic", {}), **traffic_summary(recorder, s, reporter)}
            except Exception as e:  # the bytes are clients': the recording stays whole, the findings are still given
                reporter(Event("run.warning", f"the recording could not be summarised ({type(e).__name__}: "
                                              f"{str(e)[:200]}); it is kept byte for byte in {recorder.out}"))
        watcher.stop.set()
        if watcher.is_alive():
            watcher.join(timeout=5)
        watcher.scan()
        findings = close_session(s, status="failed" if error is not None else "finished", stop_reason=stop_reason,
                                 exit_code=exit_code, error=str(error) if error is not None else None,
                                 abnormal=output.abnormal if output else [])
        if s.unsaved:
            reporter(Event("run.warning", f"the session could not be saved ({s.unsaved}): the findings below are "
                                          "read from what the app wrote"))
    if error is None:
        # A killed asanlab's request to create its container can complete after this run's first
        # look (a busy daemon takes seconds): look again, so that it does not outlive this run too.
        try:
            recover_orphans(client, reporter, sessions_too=False)
        except (DockerException, RequestException) as e:
            reporter(Event("run.warning", f"looking for containers a killed asanlab left: {e}"))
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise InfraError(f"interrupted; the session was saved in {s.path}")
        if isinstance(error, DockerException):
            raise InfraError(f"docker: {getattr(error, 'explanation', None) or error}; "
                             f"the session was saved in {s.path}") from None
        raise error
    return RunResult(s, findings, exit_code, stop_reason)


def _until_it_ends(container, opts: RunOptions, stop: StopRequest, s: sessions.Session, reporter: Reporter) -> str:
    """Wait for the app to exit, or stop it when asked (an interrupt, the timeout, the companion
    done): why it ended."""
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    while True:
        container.reload()
        if container.status in ("exited", "dead"):
            return "exited"
        if deadline and time.monotonic() > deadline:
            stop.request("timeout")
        if stop.event.wait(0.25):
            stop_container(container, 1.0 if stop.hurry else opts.grace, stop, reporter,
                           started=s.path / "state" / "php-started")
            return stop.reason or "interrupted"


def _environment(opts: RunOptions, user_env: dict[str, str], suppressions: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The app's environment, and the session subfolders mounted read-write (subfolder -> path)."""
    extra = opts.companion
    origins = bool(opts.agent) and (extra is None or extra.php_origins)
    # report_objects: LeakSanitizer lists each leaked object's address, joined with the agent's
    # php-origin.<pid> on the host (asanlab/reports/php_stack.py).
    asan = {**({} if opts.full_stacks else FAST_STACKS), **(extra.asan_options if extra else {})}
    env = environment(opts.recipe, user_env, suppressions, asan, lsan_options=ORIGIN_LSAN_OPTIONS if origins else None)
    mounts = {"state": STATE_DIR, **(extra.mounts if extra else {})}
    handler = _crash_handler(opts)
    preloaded = opts.agent or (handler.preload if handler is not None else None)
    if preloaded:
        preload = " ".join(p for p in (preloaded, env.get("LD_PRELOAD")) if p)
        # The agent writes the PHP side of reports there, and catches the crashes no sanitizer
        # handles, with gdb's view where the image has gdb (images/agent/crash.c); so does the crash
        # handler in an image without the agent.
        env.update({"LD_PRELOAD": preload, "ASANLAB_PHP_TRACE_DIR": PHP_STACK_DIR,
                    "ASANLAB_CRASH_GDB": f"{CONFIG_DIR}/{CRASH_GDB_SCRIPT}"})
        if origins:
            env["ASANLAB_PHP_ORIGINS"] = "1"
        mounts[sessions.PHP_STACK_SUBDIR] = PHP_STACK_DIR
    if preloaded and opts.timeout:
        # Kept inside the container too, for when asanlab is killed: the agent in PID 1 stops the
        # app a little after asanlab would have (images/agent/asanlab-agent.c, check_deadline).
        env.update({"ASANLAB_DEADLINE": f"{time.time() + opts.timeout + opts.grace + DEADLINE_MARGIN:.0f}",
                    "ASANLAB_DEADLINE_GRACE": f"{opts.grace:.0f}"})
    env.update(extra.env if extra else {})
    return env, mounts


def _crash_handler(opts: RunOptions):
    """The crash handler to mount and preload: only where the image has no agent, not under Valgrind."""
    return opts.crash_handler if not opts.agent and not opts.valgrind else None


def _new_session(opts: RunOptions, app: Path, command: list[str], env: dict[str, str], user_env: dict[str, str],
                 ports: dict) -> sessions.Session:
    recipe, extra = opts.recipe, opts.companion
    return sessions.create({
        "kind": extra.kind if extra else "run", "app": str(app), "command": command,
        "image": {"ref": opts.image, "id": opts.image_id},
        "recipe": recipe.raw if recipe is not None else None,
        "recipe_digest": recipe.digest() if recipe is not None else None,
        "recipe_path": str(recipe.path) if recipe is not None and recipe.path else None,
        "environment": masked(env), "user_env": masked(user_env), "args": list(opts.args),
        "ports": {k: list(v) for k, v in ports.items()},
        "timeout": opts.timeout, "grace": opts.grace, "owner": containers.owner(),
        # How allocation stacks were unwound: `reproduce` unwinds the same way, so signatures compare.
        "stacks": "full" if opts.full_stacks else "fast", "valgrind": opts.valgrind, **(extra.info if extra else {}),
    })


def _volumes(s: sessions.Session, app: Path, suppressions: list[str], mounts: dict[str, str], *,
             under_valgrind: bool = False, libraries: Path | None = None, controls: dict[str, bytes] | None = None) -> dict:
    """The app's folder read-only, the session's log, config and mounted subfolders, the crash
    handler's folder (libraries) read-only, and the companion's control files read-only."""
    config = s.path / "config"
    config.mkdir()
    data = Path(__file__).parent.parent / "data"
    (config / "sigterm.php").write_bytes((data / "sigterm.php").read_bytes())
    (config / CRASH_GDB_SCRIPT).write_bytes((data / CRASH_GDB_SCRIPT).read_bytes())
    (config / "ubsan.supp").write_bytes((data / "ubsan.supp").read_bytes())  # UBSAN_OPTIONS names it
    if under_valgrind:
        (config / "valgrind.supp").write_bytes(valgrind.SHIPPED.read_bytes())
    if suppressions:
        (config / "lsan.supp").write_text("\n".join(suppressions) + "\n")
    volumes = {str(app.parent): {"bind": APP_DIR, "mode": "ro"},
               str(s.sanitizer_dir): {"bind": LOG_DIR, "mode": "rw"},
               str(config): {"bind": CONFIG_DIR, "mode": "ro"}}
    if libraries is not None:
        volumes[str(libraries)] = {"bind": HANDLER_DIR, "mode": "ro"}
    for sub, target in mounts.items():
        (s.path / sub).mkdir(parents=True, exist_ok=True)
        volumes[str(s.path / sub)] = {"bind": target, "mode": "rw"}
    if controls:
        # Read-only in the container: the host may write these in place (the app cannot plant a
        # link or a FIFO there), and the agent may keep them open.
        control = s.path / sessions.CONTROL_SUBDIR
        control.mkdir()
        for name, data in controls.items():
            (control / name).write_bytes(data)
        volumes[str(control)] = {"bind": CONTROL_DIR, "mode": "ro"}
    return volumes
