"""Which image a run or a soak uses: the recipe's (here, pulled or built) or the one given (here or
pulled), else a clear failure. No typer, no console: events go to the reporter the caller gives."""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable

from ..docker_client import client
from ..errors import AsanlabError, UsageError
from ..events import Event, Reporter, null_reporter
from ..layout import IMAGE_AGENT, IMAGE_TOOLS


class PullPolicy(str, Enum):
    missing = "missing"
    always = "always"
    never = "never"


def image_for(r, image: str | None, reporter: Reporter = null_reporter, policy: PullPolicy | None = None,
              prefix: str | None = None, *, docker: Callable[[], Any] = client) -> tuple[str, str]:
    """The recipe's image (here, pulled or built) or the image given (here or pulled): (reference, ID).

    docker is the client factory, called only once Docker is needed."""
    from . import registry
    from .build import build as do_build, find_image

    policy = policy or PullPolicy.missing
    if policy is PullPolicy.always and r is not None and not prefix:
        raise UsageError("--pull always needs --registry PREFIX (or ASANLAB_REGISTRY) to pull a recipe's image from")
    if r is not None:
        if policy is not PullPolicy.never and prefix:
            rendered = registry.expected(r)
            local = find_image(docker(), rendered.image_ref)
            if local is not None and policy is PullPolicy.missing:
                return rendered.image_ref, local.id
            try:
                pulled = registry.pull(docker(), registry.remote_for(prefix, rendered), rendered, reporter=reporter)
                return rendered.image_ref, pulled.id
            except AsanlabError as e:
                if policy is PullPolicy.always:
                    raise
                reporter(Event("run.warning", f"{e.message}: building it here instead"))
        built = do_build(r, docker, reporter=reporter)
        return built.image_ref, built.image_id
    assert image is not None
    from . import references

    if references.problem(image):
        raise UsageError(f"--image: {references.problem(image)}")
    if policy is PullPolicy.always or (policy is PullPolicy.missing and find_image(docker(), image) is None):
        return image, registry.pull_image(docker(), image, reporter=reporter).id
    return image, image_id(image, docker)


def image_id(ref: str, docker: Callable[[], Any] = client) -> str:
    """The ID of an image on this machine, or a usage error saying how to get one."""
    from .build import find_image

    found = find_image(docker(), ref)
    if found is None:
        raise UsageError(f"image {ref} is not on this machine", hint="build one with `asanlab build RECIPE`")
    return found.id


def _labels(image_ref: str, docker: Callable[[], Any]) -> dict[str, str]:
    """The image's labels; none for an image that is not here."""
    from .build import find_image

    found = find_image(docker(), image_ref)
    return (found.labels or {}) if found is not None else {}


def agent_path(image_ref: str, docker: Callable[[], Any] = client) -> str | None:
    """asanlab's agent's path in the image, from its label: only asanlab's images carry it."""
    # An empty label (a derived image that unset it) is no agent.
    return _labels(image_ref, docker).get(IMAGE_AGENT) or None


def preloaded(image_ref: str, docker: Callable[[], Any] = client, reporter: Reporter = null_reporter, *,
              valgrind: bool = False) -> tuple[str | None, Any]:
    """What run, soak and reproduce preload into PHP: (asanlab's agent's path in the image, None),
    or in an image without it (None, asanlab's crash handler or None); nothing under Valgrind, which
    takes the process over (the agent reads ASan's reports and allocator)."""
    if valgrind:
        return None, None
    agent = agent_path(image_ref, docker)
    if agent is not None:
        return agent, None
    from . import crash_handler

    return None, crash_handler.for_image(docker(), image_ref, reporter)


def tools_of(image_ref: str, docker: Callable[[], Any] = client) -> list[str]:
    """The debugging tools an asanlab image was built with (its org.asanlab.tools label)."""
    return [t for t in _labels(image_ref, docker).get(IMAGE_TOOLS, "").split(",") if t]
