"""Recipe -> Dockerfile, build context and content-addressed tags. Pure: no Docker, no network.

The templates and helper scripts live in the repository's images/ folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .. import __version__
from ..layout import (AGENT_PATH, GDB_DIR, IMAGE_AGENT, IMAGE_DIGEST, IMAGE_EXTENSIONS, IMAGE_PHP_SOURCE,
                      IMAGE_TOOLS, LABEL_PREFIX)
from .recipe import Recipe, version_tuple
from .sources import Fetched, plan  # planning reads only the lock file

# Where images keep the soak agent (images/agent); the image label of the same name says it is there.

# zlib1g-dev: Swoole links zlib when its configure finds it (HTTP compression, WebSocket
# permessage-deflate). Without it, a Swoole 6.1.9 WebSocket server accepts a client's offer of
# compression (every browser's) and then drops each push ("Unable to compress websocket data frame").
BASE_BUILD_PACKAGES = ("make", "pkg-config", "autoconf", "file", "xz-utils", "bzip2", "ca-certificates",
                       "libc6-dev", "libffi-dev", "zlib1g-dev")
# A small PHP that still runs Swoole servers and FFI-based tests; the recipe adds to it.
BASE_PHP_CONFIGURE = ("--disable-all", "--enable-cli", "--disable-cgi", "--disable-phpdbg", "--with-ffi",
                      "--enable-sockets", "--enable-posix", "--enable-pcntl")
RUNTIME_PACKAGES = ("procps",)
# Swoole takes each coroutine's C stack (2 MiB) from malloc. Under ASan every such allocation and
# free rewrites 256 KiB of shadow memory and goes through ASan's mmap-backed large allocator: that
# is most of ASan's cost on a coroutine server (bench/asan_speed_bench.py). Swoole's own
# SW_CONTEXT_PROTECT_STACK_PAGE maps stacks with mmap instead (plus a guard page, so a coroutine
# stack overflow faults at once): ASan does not shadow them, the app computes the same.
SWOOLE_CFLAGS = ["-DSW_CONTEXT_PROTECT_STACK_PAGE=1"]


def images_dir() -> Path:
    # asanlab/_images links to the repository's images/ folder; a wheel carries a copy.
    folder = Path(__file__).resolve().parent.parent / "_images"
    if not (folder / "Dockerfile.j2").exists():
        raise FileNotFoundError(f"asanlab's Dockerfile templates are missing from this install ({folder})")
    return folder


def sanitizer_cflags(recipe: Recipe) -> list[str]:
    """The flags every C file of PHP and of each extension is compiled with."""
    flags: list[str] = []
    if recipe.sanitizers.address:
        flags.append("-fsanitize=address")
    if recipe.sanitizers.undefined:
        # The same UBSan set PHP's own --enable-undefined-sanitizer uses (seen in its build log), but a
        # misaligned access is reported and the process goes on: extensions do it on purpose where
        # x86 allows it (Swoole's WebSocket unmasking, on every client frame), and stopping there
        # stops every WebSocket server. asanlab/data/ubsan.supp silences the known sites.
        flags += ["-fsanitize=undefined", "-fno-sanitize-recover=undefined", "-fsanitize-recover=alignment",
                  "-fno-sanitize=object-size", "-fno-sanitize=function"]
    return flags


def php_configure(recipe: Recipe) -> list[str]:
    flags = list(BASE_PHP_CONFIGURE)
    flags += [f for f in recipe.php.configure if f not in flags]
    if recipe.php.debug:
        flags.append("--enable-debug")
    if recipe.php.zts:
        flags.append("--enable-zts")
    v = version_tuple(recipe.php.version)
    if v >= (8, 1):
        # PHP's own switches also define ZEND_TRACK_ARENA_ALLOC, so arena allocations are visible.
        if recipe.sanitizers.address:
            flags.append("--enable-address-sanitizer")
        if recipe.sanitizers.undefined:
            flags.append("--enable-undefined-sanitizer")
    if "valgrind" in recipe.tools:
        # Zend then tells Valgrind about its fibers' stacks (and its allocator, when it is used).
        flags.append("--with-valgrind")
    elif v < (8, 3):
        flags.append("--without-valgrind")
    return flags


def optimize_flags(recipe: Recipe) -> list[str]:
    """Given to make (EXTRA_CFLAGS/EXTRA_CXXFLAGS), which puts them after configure's flags: PHP's
    --enable-debug replaces any -O in CFLAGS by -O0, in php-src and in phpize alike."""
    n = recipe.optimize
    # Sibling-call optimisation drops callers from stacks; ASan's documentation asks to turn it off.
    return [f"-O{n}"] + (["-fno-optimize-sibling-calls"] if n > 0 else [])


def debug_flags(recipe: Recipe) -> list[str]:
    """-g; for Valgrind, DWARF 4: Valgrind 3.19 (Debian 12) cannot read clang 14's default DWARF 5
    (measured: "unhandled dwarf2 abbrev form code 0x25", then "Giving up" before the program runs)."""
    return ["-g", "-gdwarf-4"] if "valgrind" in recipe.tools else ["-g"]


def php_cflags(recipe: Recipe) -> list[str]:
    flags = debug_flags(recipe) + ["-fno-omit-frame-pointer"]
    if version_tuple(recipe.php.version) < (8, 1):
        flags += sanitizer_cflags(recipe) + (["-DZEND_TRACK_ARENA_ALLOC"] if recipe.sanitizers.address else [])
    return flags


def ext_configure(recipe: Recipe, name: str, flags: tuple[str, ...]) -> list[str]:
    out = list(flags)
    if name == "swoole" and recipe.sanitizers.address and "--enable-asan" not in out:
        out.append("--enable-asan")
    return out


@dataclass(frozen=True)
class Rendered:
    dockerfile: str
    files: dict[str, bytes | Path]  # context path -> content, or a file to read it from
    digest: str
    repository: str
    content_tag: str
    readable_tag: str
    labels: dict[str, str]

    @property
    def image_ref(self) -> str:
        return f"{self.repository}:{self.content_tag}"

    @property
    def readable_ref(self) -> str:
        return f"{self.repository}:{self.readable_tag}"

    def context_tar(self) -> io.BytesIO:
        """The build context as an in-memory tar with fixed metadata, so equal inputs give equal bytes."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in sorted(self.files):
                content = self.files[name]
                data = content.read_bytes() if isinstance(content, Path) else content
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(images_dir())), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              autoescape=False)


def readable_tag(recipe: Recipe) -> str:
    parts = [f"php{recipe.php.version}"]
    parts += [f"{e.name}{e.version}" for e in recipe.all_extensions]
    san = [n for n, on in (("asan", recipe.sanitizers.address), ("ubsan", recipe.sanitizers.undefined)) if on]
    return "-".join(parts + san + list(recipe.tools))[:128]


def render(recipe: Recipe, fetched: list[Fetched] | None = None) -> Rendered:
    """Render the Dockerfile. Without fetched sources (--print-dockerfile) file names are derived."""
    names = {p.role: p.filename for p in plan(recipe)}
    if fetched is not None:
        names = {f.role: f.filename for f in fetched}
    cc = f"clang-{recipe.compiler_version}"
    cflags = php_cflags(recipe)
    ext_cflags = debug_flags(recipe) + ["-fno-omit-frame-pointer"] + sanitizer_cflags(recipe)
    ext_ldflags = [f for f in sanitizer_cflags(recipe) if f.startswith("-fsanitize=")]
    extensions = []
    previous = "php-build"
    for ext in recipe.all_extensions:
        own = SWOOLE_CFLAGS if ext.name == "swoole" and recipe.sanitizers.address else []
        extensions.append({
            "name": ext.name, "from_stage": previous, "so_name": ext.so_name,
            "source": {"filename": names[ext.name]},
            "configure": ext_configure(recipe, ext.name, ext.configure),
            "cflags": " ".join(ext_cflags + own), "ldflags": " ".join(ext_ldflags),
            # UBSan's vptr check needs the C++ runtime part, which the (C) php binary does not carry:
            # with it, a C++ extension such as Swoole fails to load (undefined __ubsan_vptr_type_cache).
            "cxxflags": " ".join(ext_cflags + own + (["-fno-sanitize=vptr"] if recipe.sanitizers.undefined else [])),
            # Swoole switches coroutine stacks without telling ASan: images/scripts/swoole-asan-fibers.sh.
            "asan_fibers": ext.name == "swoole" and recipe.sanitizers.address,
            # Swoole registers its coroutine stacks with Valgrind when its configure finds valgrind.h.
            "valgrind_stacks": ext.name == "swoole" and "valgrind" in recipe.tools,
        })
        previous = f"ext-{ext.name}"
    php_source = ({"kind": "debian", "package": recipe.php.source.debian} if recipe.php.source.kind == "debian"
                  else {"kind": "file", "filename": names["php"]})
    # libclang-rt has the sanitizer runtimes and headers (Zend includes sanitizer/asan_interface.h).
    v = recipe.compiler_version
    build_packages = [cc, f"llvm-{v}", f"libclang-rt-{v}-dev", *BASE_BUILD_PACKAGES, *recipe.build_packages]
    if "valgrind" in recipe.tools:
        build_packages.append("valgrind")  # its headers (valgrind/valgrind.h), for PHP and Swoole
    dockerfile = _environment().get_template("Dockerfile.j2").render(
        asanlab_version=__version__, recipe=recipe, build_packages=build_packages, php_source=php_source,
        cc=cc, cxx=f"clang++-{recipe.compiler_version}", cflags=" ".join(cflags), ldflags="",
        optimize=" ".join(optimize_flags(recipe)),
        php_configure=php_configure(recipe), extensions=extensions, last_build_stage=previous,
        compiler_version=recipe.compiler_version, agent_path=AGENT_PATH,
        runtime_packages=[*RUNTIME_PACKAGES, *recipe.tools, *recipe.runtime_packages], tools=recipe.tools,
        swoole_stage=f"ext-{recipe.swoole.name}" if recipe.swoole else None, gdb_dir=GDB_DIR,
    )
    files: dict[str, bytes | Path] = {"Dockerfile": dockerfile.encode()}
    for script in sorted((images_dir() / "scripts").iterdir()):
        if script.is_file():
            files[f"scripts/{script.name}"] = script
    for part in sorted((images_dir() / "agent").iterdir()):
        if part.is_file():
            files[f"agent/{part.name}"] = part
    for f in fetched or []:
        files[f"sources/{f.filename}"] = f.path

    h = hashlib.sha256()
    h.update(f"asanlab {__version__}\n".encode())
    for name in sorted(files):
        content = files[name]
        if isinstance(content, Path) and name.startswith("sources/"):
            # Sources were verified on download: their sha256 is already known.
            digest = next(f.sha256 for f in fetched or [] if f"sources/{f.filename}" == name)
        else:
            digest = hashlib.sha256(content.read_bytes() if isinstance(content, Path) else content).hexdigest()
        h.update(f"{name} {digest}\n".encode())
    digest = h.hexdigest()
    labels = {
        f"{LABEL_PREFIX}.version": __version__,
        IMAGE_DIGEST: digest,
        f"{LABEL_PREFIX}.recipe": recipe.name,
        f"{LABEL_PREFIX}.php": recipe.php.version,
        IMAGE_PHP_SOURCE: f"debian:{recipe.php.source.debian}" if recipe.php.source.kind == "debian" else "",
        IMAGE_EXTENSIONS: ",".join(f"{e.name}-{e.version}" for e in recipe.all_extensions),
        IMAGE_AGENT: AGENT_PATH,
        # What is compiled in. Not `leak`: LeakSanitizer is part of ASan in every image, and the
        # recipe's `leak:` only sets detect_leaks when a run starts, so two recipes that differ in it
        # build the same image (one digest) and must label it the same.
        f"{LABEL_PREFIX}.sanitizers": ",".join(n for n, on in (("address", recipe.sanitizers.address),
                                                              ("undefined", recipe.sanitizers.undefined)) if on),
        IMAGE_TOOLS: ",".join(recipe.tools),
    }
    # One LABEL line, appended after the digest is taken (it holds the digest): one layer step, where
    # the SDK's labels= argument adds a step per label, about 1.5 s each.
    dockerfile += "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "\n"
    files["Dockerfile"] = dockerfile.encode()
    return Rendered(dockerfile=dockerfile, files=files, digest=digest, repository=f"asanlab/{recipe.name}",
                    content_tag=f"sha-{digest[:20]}", readable_tag=readable_tag(recipe), labels=labels)
