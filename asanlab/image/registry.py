"""Publishing and pulling asanlab images: the content-addressed tag makes a pull exact, because
a CI job with the same recipe computes the same tag.

A recipe's image is `asanlab/NAME:sha-DIGEST` here and `PREFIX/NAME:sha-DIGEST` in a registry
(PREFIX such as `ghcr.io/org/asanlab` or `127.0.0.1:5000/asanlab`). Credentials come from
Docker's own configuration (`docker login`), or from ASANLAB_REGISTRY_USER and
ASANLAB_REGISTRY_TOKEN for this process only; asanlab writes none to disk.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InfraError, UsageError
from ..layout import IMAGE_DIGEST
from ..events import Event, Reporter, null_reporter
from .recipe import Recipe
from .render import Rendered, render
from .sources import Fetched, plan

PREFIX_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def check_prefix(prefix: str) -> str:
    prefix = prefix.rstrip("/")
    if not PREFIX_RE.match(prefix) or "/" not in prefix:
        raise UsageError(f"registry {prefix!r}: expected HOST[:PORT]/PATH, e.g. 127.0.0.1:5000/asanlab "
                         "or ghcr.io/ORG/asanlab (lower case, no tag)")
    return prefix


def auth_config() -> dict | None:
    """Credentials from the environment, for this process only; None lets Docker use its config."""
    user, token = os.environ.get("ASANLAB_REGISTRY_USER"), os.environ.get("ASANLAB_REGISTRY_TOKEN")
    if user and token:
        return {"username": user, "password": token}
    return None


def expected(recipe: Recipe) -> Rendered:
    """The recipe's image and tags without downloading anything: every source must be pinned
    (recipe sha256, php.net's published sha256, the lock file) or be a local file."""
    fetched = []
    for p in plan(recipe):
        sha = p.expected
        if sha is None and p.path is not None:
            sha = hashlib.sha256(Path(p.path).read_bytes()).hexdigest()
        if sha is None:
            raise UsageError(f"{recipe.path}: the {p.role} source ({p.url}) is not pinned, so its image tag is "
                             "unknown until it is downloaded",
                             hint="run `asanlab build` once (it pins the source in the lock file) and commit "
                                  "the lock file")
        fetched.append(Fetched(p.role, p.filename, Path("/nonexistent") / p.filename, sha, p.url or str(p.path)))
    return render(recipe, fetched)


@dataclass
class Remote:
    repository: str  # PREFIX/NAME
    content_tag: str
    readable_tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.content_tag}"


def remote(prefix: str, local_repository: str, content_tag: str, readable_tag: str) -> Remote:
    """asanlab/NAME's tags under PREFIX/NAME."""
    name = local_repository.split("/", 1)[1]
    return Remote(f"{check_prefix(prefix)}/{name}", content_tag, readable_tag)


def remote_for(prefix: str, rendered: Rendered) -> Remote:
    return remote(prefix, rendered.repository, rendered.content_tag, rendered.readable_tag)


def _explain(what: str, registry: str, message: str) -> InfraError:
    low = message.lower()
    if any(s in low for s in ("connection refused", "no such host", "dial tcp", "timeout", "i/o timeout",
                              "server gave http response to https", "no route to host")):
        return InfraError(f"{what}: the registry {registry} cannot be reached ({message.strip()[:200]})")
    if any(s in low for s in ("denied", "unauthorized", "authentication required", "forbidden")):
        return InfraError(f"{what}: the registry {registry} refused ({message.strip()[:200]})",
                          hint="log in with `docker login`, or set ASANLAB_REGISTRY_USER and ASANLAB_REGISTRY_TOKEN")
    if any(s in low for s in ("manifest unknown", "not found", "does not exist")):
        return InfraError(f"{what}: not in the registry {registry} ({message.strip()[:200]})",
                          hint="build and publish it: `asanlab build RECIPE --push PREFIX`")
    return InfraError(f"{what}: {message.strip()[:300]}")


def _stream(lines, what: str, registry: str, reporter: Reporter, kind: str) -> dict:
    """Docker's push/pull progress stream -> events; an error in the stream raises."""
    layers: dict[str, tuple[int, int]] = {}
    last: dict = {}
    for item in lines:
        if "error" in item:
            raise _explain(what, registry, item.get("error") or str(item.get("errorDetail")))
        last = item
        layer, detail = item.get("id"), item.get("progressDetail") or {}
        if layer and detail.get("total"):
            layers[layer] = (detail.get("current", 0), detail["total"])
            done, total = sum(c for c, _ in layers.values()), sum(t for _, t in layers.values())
            reporter(Event(f"{kind}.progress", what, {"done": done, "total": total, "layers": len(layers)}))
        elif item.get("status") and not layer:
            reporter(Event(f"{kind}.status", item["status"]))
    return last


def push(client, image_ref: str, remote: Remote, *, reporter: Reporter = null_reporter) -> str:
    """Tag the local image as the remote's two tags and push both. Returns the pushed digest line."""
    from docker.errors import APIError

    image = client.images.get(image_ref)
    registry = remote.repository.split("/", 1)[0]
    status = ""
    for tag in (remote.content_tag, remote.readable_tag):
        image.tag(remote.repository, tag)
        what = f"push {remote.repository}:{tag}"
        reporter(Event("push.start", what))
        try:
            last = _stream(client.api.push(remote.repository, tag=tag, stream=True, decode=True,
                                           auth_config=auth_config()), what, registry, reporter, "push")
        except APIError as e:
            raise _explain(what, registry, str(e.explanation or e)) from None
        status = last.get("status", "")
    reporter(Event("push.done", f"pushed {remote.ref} ({remote.readable_tag})", {"ref": remote.ref}))
    return status


def pull(client, remote: Remote, rendered: Rendered | None, *, reporter: Reporter = null_reporter):
    """Pull the remote's content tag; with the recipe's render, check the image is the one the
    recipe describes (its digest label) and tag it locally as asanlab/NAME:sha-..."""
    from docker.errors import APIError

    registry = remote.repository.split("/", 1)[0]
    what = f"pull {remote.ref}"
    reporter(Event("pull.start", what))
    try:
        _stream(client.api.pull(remote.repository, tag=remote.content_tag, stream=True, decode=True,
                                 auth_config=auth_config()), what, registry, reporter, "pull")
        image = client.images.get(remote.ref)
    except APIError as e:
        raise _explain(what, registry, str(e.explanation or e)) from None
    if rendered is not None:
        label = (image.labels or {}).get(IMAGE_DIGEST, "")
        if label != rendered.digest:
            # A tag in a registry can be overwritten: the label says what was really built.
            client.images.remove(image.id, force=True)
            raise InfraError(f"{what}: the image's digest label ({label[:20] or 'none'}) is not the recipe's "
                             f"({rendered.digest[:20]}): refusing it")
        image.tag(rendered.repository, rendered.content_tag)
        image.tag(rendered.repository, rendered.readable_tag)
    reporter(Event("pull.done", f"pulled {remote.ref}", {"image": image.id}))
    return image


def pull_image(client, ref: str, *, reporter: Reporter = null_reporter):
    """A plain image reference (REGISTRY/REPO:TAG), no recipe."""
    from docker.errors import APIError

    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    registry = repo.split("/", 1)[0]
    what = f"pull {ref}"
    reporter(Event("pull.start", what))
    try:
        _stream(client.api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth_config()),
                what, registry, reporter, "pull")
        image = client.images.get(f"{repo}:{tag}")
    except APIError as e:
        raise _explain(what, registry, str(e.explanation or e)) from None
    reporter(Event("pull.done", f"pulled {ref}", {"image": image.id}))
    return image
