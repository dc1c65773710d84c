"""asanlab's crash handler for images it did not build (`run --image` of your own PHP image).

asanlab's agent is built into each image it makes, against that image's PHP headers. An image of
your own has none, so a worker that dies by SIGSEGV there leaves only Swoole's `abnormal exit`
line. The same agent sources built without PHP's headers (images/crash-handler.Dockerfile.j2, in a
helper image from Debian's base) catch the signal as they do in asanlab's images (crash.c: the
signal, the address, glibc's backtrace, gdb's view where the image has gdb) and name the PHP
function and line running through PHP's own exported functions. The library is copied out of the
helper image once, cached in the state folder by its digest, and mounted read-only into runs.

It is preloaded only into an image whose glibc is as new as the library needs (the image's dynamic
loader or libc says its version; read once per image): a library the loader cannot bind would stop PHP
from starting. Anything that keeps the handler away leaves the run as it was, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2

from .. import containers, untrusted
from ..untrusted import atomic_write
from ..errors import InfraError
from ..events import Event, Reporter, null_reporter
from ..layout import HANDLER_DIR
from ..state import state_dir
from .recipe import DEFAULT_BASE_IMAGE
from .render import Rendered, images_dir

REPOSITORY = "asanlab/crash-handler"
FOLDER = "/opt/asanlab-crash"  # in the helper image: the library and the glibc version it needs
LIBRARY = "asanlab-crash.so"
LOADERS = {"amd64": "/lib64/ld-linux-x86-64.so.2", "arm64": "/lib/ld-linux-aarch64.so.1"}
# What the loader is asked, in turn: its own --version (glibc 2.33 and newer), else libc.so.6 run as
# a program, which prints its version (Debian's and Ubuntu's path, then Fedora's and RHEL's).
LIBC_PATHS = {"amd64": ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"],
              "arm64": ["/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]}
LOADER_VERSION = re.compile(r"version (\d+)\.(\d+)")


@dataclass(frozen=True)
class Handler:
    folder: Path  # on the host: LIBRARY and `glibc`
    glibc: tuple[int, int]  # the newest glibc symbol version the library needs
    # The image's own LD_PRELOAD (its ENV): the run's environment replaces it, so it is kept here.
    image_preload: str = ""

    @property
    def preload(self) -> str:
        return " ".join(p for p in (f"{HANDLER_DIR}/{LIBRARY}", self.image_preload) if p)


def rendered(base_image: str, base_id: str) -> Rendered:
    """The helper image: the same base always gives the same digest, so it is built once."""
    template = jinja2.Template((images_dir() / "crash-handler.Dockerfile.j2").read_text(), keep_trailing_newline=True)
    dockerfile = template.render(base_image=base_image, folder=FOLDER, library=LIBRARY)
    files: dict[str, bytes | Path] = {"Dockerfile": dockerfile.encode()}
    for part in sorted((images_dir() / "agent").iterdir()):
        if part.is_file():
            files[f"agent/{part.name}"] = part
    h = hashlib.sha256(f"{base_image} {base_id}\n".encode())
    for name in sorted(files):
        content = files[name]
        data = content.read_bytes() if isinstance(content, Path) else content
        h.update(f"{name} {hashlib.sha256(data).hexdigest()}\n".encode())
    digest = h.hexdigest()
    return Rendered(dockerfile=dockerfile, files=files, digest=digest, repository=REPOSITORY,
                    content_tag=f"sha-{digest[:20]}", readable_tag=f"sha-{digest[:20]}", labels={})


def parse_glibc(text: str) -> tuple[int, int] | None:
    """`GLIBC_2.34` (the library's need) or ld.so's `... stable release version 2.36.` (an image's)."""
    m = re.search(r"GLIBC_(\d+)\.(\d+)", text) or LOADER_VERSION.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def ensure(client, *, base_image: str = DEFAULT_BASE_IMAGE, reporter: Reporter = null_reporter) -> Handler:
    """The handler, built and copied out on first use. Raises what a build raises."""
    from .build import find_image, require_base_image, stream_build

    require_base_image(client, base_image)
    base = find_image(client, base_image)
    r = rendered(base_image, base.id)
    folder = state_dir() / "crash-handler" / r.digest[:20]
    if (folder / LIBRARY).exists() and (folder / "glibc").exists():
        return _handler(folder)
    image = find_image(client, r.image_ref)
    if image is None:
        reporter(Event("crash_handler.build", "building asanlab's crash handler for images asanlab did not build "
                                              "(once; about a minute)"))
        log_path = state_dir() / "builds" / f"crash-handler-{r.digest[:12]}.log"
        image_id = stream_build(client, r, log_path, no_cache=False, network=None, reporter=reporter)
        client.images.get(image_id).tag(REPOSITORY, r.content_tag)
        image = client.images.get(image_id)
    with containers.temporary(client, image.id, role="crash-handler") as container:
        stream, _ = container.get_archive(FOLDER)
        data = b"".join(stream)
    # Written beside, then renamed: a copy cut short is never taken for the handler.
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in (LIBRARY, "glibc"):
                (partial / name).write_bytes(tar.extractfile(member).read())
    if not (partial / LIBRARY).exists() or parse_glibc((partial / "glibc").read_text()) is None:
        raise InfraError(f"the crash handler's image {r.image_ref} holds no {LIBRARY} with its glibc version")
    if (folder / LIBRARY).exists():  # another asanlab copied it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        partial.replace(folder)
    return _handler(folder)


def _handler(folder: Path) -> Handler:
    return Handler(folder, parse_glibc((folder / "glibc").read_text()) or (0, 0))


def image_glibc(client, image) -> tuple[int, int] | None:
    """The glibc of an image (as its dynamic loader and libc say), or None: no glibc (Alpine's musl),
    an architecture asanlab does not know. Kept per image id in the state folder."""
    cache = state_dir() / "crash-handler" / "glibc-of-images.json"
    known = _read_cache(cache)
    if image.id in known:
        return tuple(known[image.id]) if known[image.id] else None
    arch = image.attrs.get("Architecture", "")
    loader = LOADERS.get(arch)
    version = None
    for argument in (["--version"] + LIBC_PATHS[arch]) if loader else []:
        from docker.errors import DockerException

        try:
            out = containers.call(client, image.id, [argument], role="check", timeout=60, entrypoint=[loader])
        except DockerException:  # no such loader: the container does not start
            break
        version = parse_glibc(out.output) if out.exit_code == 0 else None
        if version is not None:
            break
    known[image.id] = list(version) if version else None
    atomic_write(cache, json.dumps(known, indent=1).encode())  # whole or not at all: a cut file is never read
    return version


def _read_cache(cache: Path) -> dict[str, list[int] | None]:
    """image id -> (major, minor) of its glibc, or None for none. A file that is not such a table
    (cut short, edited) is a cache: it is read as empty and written anew."""
    try:
        data = json.loads(untrusted.read_text(cache, limit=untrusted.SMALL_LIMIT * 16))
    except (OSError, ValueError, untrusted.UntrustedFileError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items()
            if v is None or isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)}


def for_image(client, image_ref: str, reporter: Reporter = null_reporter) -> Handler | None:
    """The handler to preload into an image asanlab did not build, or None (with a warning: why)."""
    from docker.errors import DockerException

    from ..errors import AsanlabError
    from .build import find_image

    image = find_image(client, image_ref)
    if image is None:
        return None
    try:
        glibc = image_glibc(client, image)
        if glibc is None:
            reporter(Event("run.warning", f"{image_ref[:71]} has no glibc asanlab knows (musl?): a crash "
                                                 "there leaves no stack", {"warning": True}))
            return None
        handler = ensure(client, reporter=reporter)
    except (DockerException, AsanlabError, OSError) as e:
        reporter(Event("run.warning", f"asanlab's crash handler is not available ({str(e)[:200]}): a crash "
                                             "in this image leaves no stack", {"warning": True}))
        return None
    if glibc < handler.glibc:
        reporter(Event("run.warning", f"{image_ref[:71]} has glibc {glibc[0]}.{glibc[1]}, older than "
                                             f"asanlab's crash handler needs ({handler.glibc[0]}.{handler.glibc[1]}): "
                                             "a crash there leaves no stack", {"warning": True}))
        return None
    image_env = (image.attrs.get("Config") or {}).get("Env") or []
    own = [e.partition("=")[2] for e in image_env if e.startswith("LD_PRELOAD=")]
    # Said each time: asanlab puts a library of its own into a process of the user's image.
    reporter(Event("crash_handler.preload", f"{image_ref[:71]} has no asanlab agent: asanlab's crash handler is "
                                            f"preloaded ({HANDLER_DIR}/{LIBRARY}) so that a crash leaves its C "
                                            "stack and PHP line"))
    return replace(handler, image_preload=own[0] if own else "")
