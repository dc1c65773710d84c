"""`asanlab build`: fetch and verify sources, render, build through the Docker SDK, prove the result.

The classic builder's stream is read line by line: "Step n/m" lines become progress events,
everything goes to a log file, and a failure shows the last lines and the log's path.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from . import check
from ..errors import BuildFailed, InfraError
from ..events import Event, Reporter, null_reporter
from .recipe import Recipe, agent_untested
from .render import Rendered, render
from .sources import fetch_all
from ..state import state_dir

STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    image_ref: str
    readable_ref: str
    digest: str
    cached: bool  # True when the image already existed: nothing was built
    seconds: float
    log_path: Path | None
    check: check.CheckResult | None


def find_image(client, ref: str):
    from docker.errors import ImageNotFound

    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None


def build(recipe: Recipe, client_factory, *, no_cache: bool = False, network: str | None = None,
          frozen: bool = False, verify: bool = True, reporter: Reporter = null_reporter) -> BuildResult:
    """Build the recipe's image unless an image with its content tag exists. Returns what was built."""
    started = time.monotonic()
    # Validation and sources first: a bad checksum stops here, before Docker is touched.
    fetched = fetch_all(recipe, frozen=frozen, reporter=reporter)
    rendered = render(recipe, fetched)
    client = client_factory()
    existing = None if no_cache else find_image(client, rendered.image_ref)
    if existing is not None:
        reporter(Event("build.cached", f"{rendered.image_ref} is up to date", {"image": existing.id}))
        existing.tag(rendered.repository, rendered.readable_tag)
        return BuildResult(existing.id, rendered.image_ref, rendered.readable_ref, rendered.digest, True,
                           time.monotonic() - started, None, None)
    require_base_image(client, recipe.base_image)
    untested = agent_untested(recipe)
    if untested:
        reporter(Event("build.warning", untested, {"warning": True}))
    log_path = state_dir() / "builds" / f"{recipe.name}-{rendered.digest[:12]}.log"
    image_id = stream_build(client, rendered, log_path, no_cache=no_cache, network=network, reporter=reporter)
    result_check = None
    if verify:
        reporter(Event("check.start", "checking that the image is really instrumented"))
        result_check = check.run_checks(client, image_id, recipe, reporter=reporter)
        if not result_check.ok:
            # A build that is not instrumented must not be found again as "up to date".
            client.images.remove(image_id, force=True)
            raise BuildFailed("the image built but is not properly instrumented: "
                              + "; ".join(result_check.failures), log_path=str(log_path))
    client.images.get(image_id).tag(rendered.repository, rendered.content_tag)
    client.images.get(image_id).tag(rendered.repository, rendered.readable_tag)
    seconds = time.monotonic() - started
    reporter(Event("build.done", f"built {rendered.image_ref} ({rendered.readable_ref}) in {seconds:.0f} s",
                   {"image": image_id, "seconds": seconds}))
    return BuildResult(image_id, rendered.image_ref, rendered.readable_ref, rendered.digest, False, seconds,
                       log_path, result_check)


def require_base_image(client, base_image: str) -> None:
    if find_image(client, base_image) is not None:
        return
    from docker.errors import APIError

    try:
        name, _, tag = base_image.partition(":")
        client.images.pull(name, tag=tag or "latest")
    except APIError as e:
        raise InfraError(f"base image {base_image} is not on this machine and cannot be pulled "
                         f"({str(e.explanation or e)[:160]})",
                         hint="without a registry, make it locally: `make base-image` (debootstrap + docker import)") \
            from None


def stream_build(client, rendered: Rendered, log_path: Path, *, no_cache: bool, network: str | None,
                  reporter: Reporter) -> str:
    from docker.errors import APIError

    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=30)
    image_id = None
    error = None
    step, total = 0, 0
    started = time.monotonic()
    reporter(Event("build.start", f"building {rendered.readable_ref}", {"log": str(log_path)}))
    with open(log_path, "w") as log:
        log.write(rendered.dockerfile + "\n# ---- build output ----\n")
        try:
            stream = client.api.build(
                fileobj=rendered.context_tar(), custom_context=True,
                rm=True, forcerm=True, nocache=no_cache, pull=False,
                network_mode=network, decode=True)
            for chunk in stream:
                if "error" in chunk:
                    error = chunk["error"].strip()
                    log.write(error + "\n")
                    break
                if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                text = chunk.get("stream")
                if not text:
                    continue
                log.write(text)
                for line in text.splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    tail.append(line)
                    m = STEP.match(line)
                    if m:
                        step, total = int(m.group(1)), int(m.group(2))
                        reporter(Event("build.step", m.group(3), {"step": step, "total": total,
                                                                  "elapsed": time.monotonic() - started}))
                    else:
                        reporter(Event("build.line", line[:300], {"step": step, "total": total,
                                                                  "elapsed": time.monotonic() - started}))
        except APIError as e:
            error = str(e.explanation or e)
            log.write(error + "\n")
    if error or not image_id:
        raise BuildFailed(f"docker build failed at step {step}/{total}: {error or 'no image was produced'}",
                          log_path=str(log_path), tail=list(tail))
    return image_id
