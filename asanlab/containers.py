"""Containers that never outlive asanlab: created labelled, removed on every exit path."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

from .render import LABEL_PREFIX

KEEP_ENV = "ASANLAB_KEEP_CONTAINER"


def labels(role: str, session: str | None = None) -> dict[str, str]:
    out = {f"{LABEL_PREFIX}.role": role}
    if session:
        out[f"{LABEL_PREFIX}.session"] = session
    return out


@contextlib.contextmanager
def temporary(client, image: str, *, role: str, session: str | None = None, **kwargs) -> Iterator:
    """Create (not start) a container; remove it when the block ends, unless ASANLAB_KEEP_CONTAINER=1."""
    name = f"asanlab-{role}-{session or uuid.uuid4().hex[:10]}"
    container = client.containers.create(image, name=name, labels=labels(role, session), **kwargs)
    try:
        yield container
    finally:
        if os.environ.get(KEEP_ENV) != "1":
            remove(container)


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
