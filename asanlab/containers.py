"""Containers that never outlive asanlab: created labelled, removed on every exit path."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .layout import CONTAINER_OWNER, CONTAINER_ROLE, CONTAINER_SESSION, CONTAINER_SESSION_PATH

KEEP_ENV = "ASANLAB_KEEP_CONTAINER"


OWNER = CONTAINER_OWNER
SESSION_PATH = CONTAINER_SESSION_PATH


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks after boot): with the PID, it names one process even
    after the PID is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_is_gone(value: str) -> bool:
    """True when the asanlab that owns a container ran on this host and no longer runs. A
    container of another host, or an unreadable label, is never called orphaned."""
    host, _, rest = value.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not Path(f"/proc/{pid}").exists() or _start_time(int(pid)) != start


def labels(role: str, session: str | None = None, session_path: str | None = None) -> dict[str, str]:
    out = {CONTAINER_ROLE: role, OWNER: owner()}
    if session:
        out[CONTAINER_SESSION] = session
    if session_path:
        out[SESSION_PATH] = session_path
    return out


@contextlib.contextmanager
def temporary(client, image: str, *, role: str, session: str | None = None, session_path: str | None = None,
              **kwargs) -> Iterator:
    """Create (not start) a container; remove it when the block ends, unless ASANLAB_KEEP_CONTAINER=1."""
    name = f"asanlab-{role}-{session or uuid.uuid4().hex[:10]}"
    container = client.containers.create(image, name=name, labels=labels(role, session, session_path), **kwargs)
    try:
        yield container
    finally:
        if os.environ.get(KEEP_ENV) != "1":
            remove(container)


@dataclass(frozen=True)
class Result:
    exit_code: int | None
    output: str


def call(client, image: str, command: list[str], *, role: str, timeout: float,
         environment: dict[str, str] | None = None, stderr: bool = True,
         entrypoint: list[str] | None = None, limit: int | None = None, **options) -> Result:
    """Run a short command in a throwaway container and return what it printed: the one way
    asanlab does so (check, symbolize, bundle). The container is labelled like every other and
    removed however this ends (error, wait timeout, Ctrl-C). Docker's errors, and requests' for a
    wait that times out, pass through untranslated: the caller says what it was doing
    (docker_client.docker_errors). options go to Docker's create (read_only, network_disabled...);
    limit bounds what is read of the output, for an image that is not asanlab's."""
    extra = {"environment": environment} if environment is not None else {}
    if entrypoint is not None:
        extra["entrypoint"] = entrypoint
    with temporary(client, image, role=role, command=command, **extra, **options) as container:
        container.start()
        status = container.wait(timeout=timeout)
        if limit is None:
            output = container.logs(stdout=True, stderr=stderr)
        else:
            output = b""
            for chunk in container.logs(stdout=True, stderr=stderr, stream=True):
                output += chunk[:limit - len(output)]
                if len(output) >= limit:
                    break
    return Result(status.get("StatusCode"), output.decode(errors="replace"))


def remove(container) -> None:
    from docker.errors import APIError, NotFound

    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError:
        # One retry: removal can race with the container's own exit.
        with contextlib.suppress(NotFound):
            container.remove(force=True)


def orphans(client) -> list:
    """asanlab's app containers whose asanlab was killed (SIGKILL, a crash, a closed terminal)."""
    found = client.containers.list(all=True, filters={"label": f"{CONTAINER_ROLE}=run"})
    return [c for c in found if owner_is_gone(c.labels.get(OWNER, ""))]
