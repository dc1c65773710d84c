"""The one place that creates the Docker client, lazily: importing asanlab never contacts a daemon."""

from __future__ import annotations

import functools

from .errors import DockerUnavailable


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
