"""The one place that creates the Docker client, lazily (importing asanlab never contacts a daemon),
and that turns Docker's errors into asanlab's."""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

from .errors import DockerUnavailable, InfraError


@functools.lru_cache(maxsize=1)
def client():
    import docker
    from docker.errors import DockerException

    try:
        c = docker.from_env(timeout=120)
        c.ping()
    except DockerException as e:
        raise DockerUnavailable(
            "cannot reach the Docker daemon: is Docker running, and may this user use it?",
            hint=f"`docker info` should work first (details: {str(e).splitlines()[0][:200]})") from None
    return c


@contextlib.contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Docker's errors, and those of the HTTP connection to its daemon, become InfraError("<what>: <error>")
    (exit 3). Anything else passes through: a bug in asanlab must not pass for a Docker failure."""
    from docker.errors import DockerException
    from requests import RequestException

    try:
        yield
    # RequestException too: a wait that times out arrives as one (ReadTimeout, or ConnectionError
    # "Read timed out"), as does a daemon that went away.
    except (DockerException, RequestException) as e:
        raise InfraError(f"{what}: {e}") from None
