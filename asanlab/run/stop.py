"""Stopping an app so that LeakSanitizer can still report (SIGTERM, then a grace period), the
user's interrupts, and the containers and sessions a killed asanlab left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from .. import containers, untrusted
from .. import session as sessions
from ..events import Event, Reporter, null_reporter
from ..reports.crash import abnormal_exits_in
from .session_end import close_session


class StopRequest:
    """SIGINT/SIGTERM ask the run to stop (gracefully); a second one skips the grace period."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.hurry = False
        self.event = threading.Event()
        self.saved: dict = {}

    def __enter__(self) -> "StopRequest":
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


def recover_orphans(client, reporter: Reporter = null_reporter, *, sessions_too: bool = True) -> list[str]:
    """Stop the containers of runs whose asanlab was killed, as a run stops (SIGTERM, then the
    session's grace for LeakSanitizer's reports), keep the app's whole output, close their sessions
    (stop reason "orphaned") and remove the containers; with sessions_too, also close the sessions
    left running without a container. Returns the sessions closed."""
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
            stopper = StopRequest()
            stopper.request("orphaned")
            if c.status == "running":
                stop_container(c, grace, stopper, reporter)
            # A container created but never started has no exit to wait for.
            exit_code = c.wait(timeout=60).get("StatusCode") if c.status != "created" else None
            if s is not None:
                # The owner copied the output until it died; the daemon still holds all of it.
                logs = c.logs(stdout=True, stderr=True)
                if len(logs) > (os.lstat(s.output_log).st_size if untrusted.is_file(s.output_log) else 0):
                    untrusted.atomic_write(s.output_log, logs)
        except (DockerException, RequestException) as e:
            reporter(Event("run.warning", f"container {c.name}: {e}"))
            exit_code = None
        if s is not None and s.data.get("status") == "running":
            close_session(s, status="finished", stop_reason="orphaned", exit_code=exit_code,
                   error="asanlab was killed during the run; stopped and closed by a later asanlab",
                   abnormal=abnormal_exits_in(s.output_log))
            closed.append(s.id)
        containers.remove(c)
    if not sessions_too:
        return closed
    # Sessions whose asanlab died before its container existed (or after it was removed).
    for sid in sessions.list_ids():
        try:
            s = sessions.load(sid)
        except sessions.SessionError:
            continue
        if s.data.get("status") == "running" and containers.owner_is_gone(s.data.get("owner") or ""):
            close_session(s, status="finished", stop_reason="orphaned", exit_code=None,
                   error="asanlab was killed during the run; closed by a later asanlab",
                   abnormal=abnormal_exits_in(s.output_log))
            reporter(Event("run.orphan", f"session {s.id} was left running by a killed asanlab: closed"))
            closed.append(s.id)
    return closed


# How long a stop waits for PHP to start (sigterm.php's mark) before it sends SIGTERM anyway.
START_WAIT = 10.0


def stop_container(container, grace: float, stop: StopRequest, reporter: Reporter, started: Path | None = None) -> None:
    reporter(Event("run.stopping", f"stopping ({stop.reason}): SIGTERM, then up to {grace:.0f} s for "
                                   "LeakSanitizer to write its reports"))
    # PID 1 drops a signal it has no handler for, and PHP's own start-up handler re-raises SIGTERM
    # with the default action: a SIGTERM sent before sigterm.php ran would be lost, and with it the
    # leak report. sigterm.php marks the moment; an app that never gets there is stopped anyway.
    wait_until = time.monotonic() + min(START_WAIT, grace)
    while started is not None and not untrusted.is_file(started) and time.monotonic() < wait_until and not stop.hurry:
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
