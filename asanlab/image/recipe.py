"""Recipes: YAML in, a frozen, validated Recipe out. Pure: no Docker, no network.

Validation runs in two passes, both before anything else happens: the JSON schema in
data/recipe.schema.json (types, unknown keys, flag shapes), then the rules a schema cannot say
(Swoole/PHP compatibility, paths that leave the recipe's folder). Every problem names the file,
the key path and the line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import RecipeError
from . import references
from .recipe_yaml import (MAX_RECIPE_BYTES, MAX_RECIPE_VALUES, control_characters, expanded_size, explain, fmt_path,
                          schema, walk)
from ..reports import suppressions

DEFAULT_BASE_IMAGE = "debian:bookworm"
DEFAULT_COMPILER_VERSION = 14
# The clang each Debian release ships (trixie has no clang-14): the default follows the base image.
DEBIAN_CLANG = {"bookworm": 14, "12": 14, "trixie": 19, "13": 19}
# -O1 is the level AddressSanitizer's documentation asks for: at -O0 a Swoole server under ASan ran
# 3.8x slower than release here, at -O1 2.5x (bench/asan_speed_bench.py). It holds with php.debug
# too, whose configure forces -O0: the level is passed again at make time, after PHP's own flags.
DEFAULT_OPTIMIZE = 1

# Swoole line -> (oldest PHP, newest PHP) it builds against (from each Swoole release's notes and the PHP version
# check in its config.m4).
# The PHP lines asanlab's agent is run on in its own test suite (tests/docker/test_swoole.py). The agent reads
# PHP's internals (execute data, the object store, properties) through the image's own headers, so another
# minor compiles, but what it reads there is not checked: such a build says so.
AGENT_TESTED_PHP = ("8.2", "8.4")

SWOOLE_PHP_SUPPORT: dict[str, tuple[str, str]] = {
    "4.8": ("7.2", "8.2"),
    "5.0": ("8.0", "8.2"),
    "5.1": ("8.0", "8.3"),
    "6.0": ("8.1", "8.4"),
    "6.1": ("8.1", "8.4"),
    "6.2": ("8.2", "8.5"),
}


@dataclass(frozen=True)
class Source:
    kind: str  # "url", "path", "debian" or "release" (derived from the version)
    url: str | None = None
    path: Path | None = None
    debian: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Extension:
    name: str
    version: str
    source: Source
    configure: tuple[str, ...] = ()
    so_name: str = ""


@dataclass(frozen=True)
class Php:
    version: str
    source: Source
    configure: tuple[str, ...] = ()
    # Off by default: at -O1, PHP's debug build (assertions) ran a Swoole server 3.12x slower than
    # release under asanlab soak's options, against 2.47x without (bench/asan_speed_bench.py).
    debug: bool = False
    zts: bool = False


@dataclass(frozen=True)
class Sanitizers:
    address: bool = True
    leak: bool = True
    undefined: bool = True


TOOLS = ("gdb", "valgrind")


def sanitizers_of(given: dict | None, tools: list[str] | tuple[str, ...] = ()) -> "Sanitizers":
    """A recipe's `sanitizers:` mapping, with the defaults of the Sanitizers dataclass (the only
    place they are written) for the keys it leaves out. A recipe with `tools: [valgrind]` is a debug
    image for Valgrind: no sanitizer unless it names one (Valgrind cannot run ASan's processes)."""
    given = given or {}
    defaults = {"address": False, "leak": False, "undefined": False} if "valgrind" in (tools or ()) else {}
    return Sanitizers(**{**defaults, **{k: given[k] for k in ("address", "leak", "undefined") if k in given}})


@dataclass(frozen=True)
class Runtime:
    asan_options: dict[str, Any] = field(default_factory=dict)
    lsan_options: dict[str, Any] = field(default_factory=dict)
    ubsan_options: dict[str, Any] = field(default_factory=dict)
    suppressions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path | None
    base_image: str
    compiler_version: int
    php: Php
    swoole: Extension | None
    extensions: tuple[Extension, ...]
    sanitizers: Sanitizers
    build_packages: tuple[str, ...]
    runtime_packages: tuple[str, ...]
    runtime: Runtime
    raw: dict[str, Any]  # the YAML as read, for the session's snapshot
    optimize: int = DEFAULT_OPTIMIZE  # -O level of PHP and every extension, debug or not
    tools: tuple[str, ...] = ()  # gdb, valgrind: installed in the image with what they need

    @property
    def all_extensions(self) -> tuple[Extension, ...]:
        return ((self.swoole,) if self.swoole else ()) + self.extensions

    @property
    def folder(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


# ---- loading ----------------------------------------------------------------------------


def load(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        if not path.is_file():  # a folder, a FIFO or a device would fail late or block
            raise RecipeError([f"{path}: recipe file not found" if not path.exists()
                               else f"{path}: not a regular file; a recipe is a YAML file"])
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError([f"{path}: {path.stat().st_size} bytes; a recipe is at most {MAX_RECIPE_BYTES} bytes"])
        text = path.read_text()
    except OSError as e:
        raise RecipeError([f"{path}: cannot read recipe: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise RecipeError([f"{path}: not UTF-8 text (byte {e.start})"]) from None
    return parse(text, path)


def parse(text: str, path: Path | None = None) -> Recipe:
    where = str(path) if path else "<recipe>"
    try:
        node = yaml.compose(text)
        if node is not None and expanded_size(node, {}, MAX_RECIPE_VALUES) > MAX_RECIPE_VALUES:
            raise RecipeError([f"{where}: more than {MAX_RECIPE_VALUES} values once YAML aliases are expanded; "
                               "a recipe is small"])
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError([f"{where}{line}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(data, dict):
        raise RecipeError([f"{where}: a recipe is a YAML mapping (name:, php:, ...)"])
    lines: dict[tuple, int] = {}
    dupes: list[tuple] = []
    walk(node, (), lines, dupes)

    def problem(p: tuple, msg: str) -> str:
        line = lines.get(p) or lines.get(p[:-1]) or 1
        return f"{where}:{line}: {fmt_path(p)}: {msg}"

    problems = [problem(d, "key given twice") for d in dupes]
    problems += [problem(p, m) for p, m in control_characters(data)]
    if problems:
        raise RecipeError(problems)
    root = schema()
    validator = jsonschema.Draft202012Validator(root)
    for err in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        problems += [problem(p, m) for p, m in explain(err, root)]
    if problems:
        raise RecipeError(problems)

    folder = path.parent if path else Path.cwd()
    problems += [problem(p, m) for p, m in _semantic_problems(data, folder)]
    if problems:
        raise RecipeError(problems)
    return _build(data, path, folder)


# Sanitizer options asanlab owns, with why: a recipe that set them would end capture silently.
OWNED_OPTIONS = {"log_path": "one log per process in the session's folder, which is how reports are captured",
                 "log_exe_name": "the log's name ends in the pid, which is how reports are told apart",
                 "log_to_syslog": "reports are read from the session's logs"}
OPTION_SEPARATORS = re.compile(r"[:,\s'\"]")


def _semantic_problems(data: dict, folder: Path) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    php_version = data["php"]["version"]
    if version_tuple(php_version) < (8, 0):
        out.append((("php", "version"), f"PHP {php_version} is not supported: asanlab builds PHP 8.0 and newer"))
    tools = data.get("tools") or []
    san = sanitizers_of(data.get("sanitizers"), tools)
    if san.leak and not san.address:
        out.append((("sanitizers", "leak"), "the leak checker is part of AddressSanitizer: set address: true or leak: false"))
    if "valgrind" in tools and san.address:
        out.append((("tools",), "Valgrind cannot run a program built with AddressSanitizer (both take over memory "
                                "allocation and the address space): make a second recipe for Valgrind and leave "
                                "sanitizers out of it"))
    if not (san.address or san.undefined or tools):
        out.append((("sanitizers",), "no sanitizer enabled: set address or undefined to true, or ask for "
                                     "tools: [gdb, valgrind] for a debug image"))
    swoole = data.get("swoole")
    if swoole:
        line = minor(swoole["version"])
        support = SWOOLE_PHP_SUPPORT.get(line)
        if support is None:
            out.append((("swoole", "version"), f"unknown Swoole line {line}; known: {', '.join(SWOOLE_PHP_SUPPORT)}"))
        else:
            lo, hi = support
            if not version_tuple(lo) <= version_tuple(minor(php_version)) <= version_tuple(hi):
                out.append((("swoole", "version"),
                            f"Swoole {swoole['version']} supports PHP {lo} to {hi}, not PHP {php_version}"))
    names = ["swoole"] if swoole else []
    for i, ext in enumerate(data.get("extensions", [])):
        if ext["name"] in names:
            out.append((("extensions", i, "name"), f"extension {ext['name']!r} is declared twice"))
        names.append(ext["name"])
    sources = [(("php",), data["php"])] + ([(("swoole",), swoole)] if swoole else [])
    sources += [(("extensions", i), e) for i, e in enumerate(data.get("extensions", []))]
    for p, section in sources:
        src = section.get("source")
        if src is None:
            continue
        given = [k for k in ("url", "path", "debian") if k in src]
        # sha256 alone pins the release URL the version names (a mirror may serve it).
        if len(given) > 1 or not given and "sha256" not in src:
            out.append((p + ("source",), "give exactly one of url, path or debian (or sha256 alone, which "
                                         "pins the release the version names)"))
            continue
        if "debian" in src and p != ("php",):
            out.append((p + ("source", "debian"), "a Debian source package is supported for PHP only"))
        if "debian" in src and "sha256" in src:
            out.append((p + ("source", "sha256"), "apt verifies Debian source packages itself: drop sha256"))
        if "path" in src:
            out += [(p + ("source", "path"), m) for m in _path_problems(src["path"], folder)]
    if "base_image" in data and references.problem(data["base_image"]):
        out.append((("base_image",), references.problem(data["base_image"])))
    runtime = data.get("runtime", {})
    for table in ("asan_options", "lsan_options", "ubsan_options"):
        for key, value in (runtime.get(table) or {}).items():
            if key in OWNED_OPTIONS:
                out.append((("runtime", table, key), f"asanlab sets {key} itself ({OWNED_OPTIONS[key]}): leave it out"))
            elif isinstance(value, str) and OPTION_SEPARATORS.search(value):
                # The sanitizers split their options at these: a value holding one would add options
                # the recipe does not name (a second log_path ends capture).
                out.append((("runtime", table, key), f"value {value!r} holds {OPTION_SEPARATORS.search(value).group()!r}, "
                                                     "which separates sanitizer options: one option per key"))
    for i, line in enumerate(runtime.get("suppressions", ())):
        why = suppressions.problem(line)
        if why:
            out.append((("runtime", "suppressions", i), why))
    if "suppressions_file" in runtime:
        where = ("runtime", "suppressions_file")
        found = _path_problems(runtime["suppressions_file"], folder)
        target = folder / runtime["suppressions_file"]
        if not found and target.stat().st_size > MAX_RECIPE_BYTES:
            found = [f"{runtime['suppressions_file']!r} is larger than {MAX_RECIPE_BYTES} bytes"]
        elif not found:
            try:
                lines = target.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                lines, found = [], [f"{runtime['suppressions_file']!r}: cannot read it ({e})"]
            for n, line in enumerate(lines, 1):
                why = suppressions.problem(line) if line.strip() and not line.strip().startswith("#") else None
                if why:
                    found.append(f"{runtime['suppressions_file']}:{n}: {why}")
        out += [(where, m) for m in found]
    matrix = data.get("matrix", {})
    # A source that names one file cannot serve several versions: the axis needs derived URLs.
    if "php" in matrix and "source" in data["php"]:
        out.append((("matrix", "php"), "php.source names one PHP; drop it so that each version's php.net URL is used"))
    if "swoole" in matrix and swoole and {"url", "path"} & set(swoole.get("source", {})):
        out.append((("matrix", "swoole"), "swoole.source names one file; drop url/path so that each version's "
                                          "release URL is used"))
    return out


def _path_problems(value: str, folder: Path) -> list[str]:
    target = (folder / value).resolve()
    if Path(value).is_absolute() or not target.is_relative_to(folder.resolve()):
        return [f"{value!r} leaves the recipe's folder ({folder}); keep sources beside the recipe"]
    if not target.exists():
        return [f"{value!r} does not exist (looked for {target})"]
    if not target.is_file():  # a folder, a FIFO or a device
        return [f"{value!r} is not a regular file"]
    return []


def _source(section: dict, folder: Path) -> Source:
    src = section.get("source")
    if src is None or not {"url", "path", "debian"} & set(src):
        return Source(kind="release", sha256=(src or {}).get("sha256"))
    if "url" in src:
        return Source(kind="url", url=src["url"], sha256=src.get("sha256"))
    if "path" in src:
        return Source(kind="path", path=(folder / src["path"]).resolve(), sha256=src.get("sha256"))
    return Source(kind="debian", debian=src["debian"])


def _extension(data: dict, folder: Path, name: str | None = None) -> Extension:
    name = name or data["name"]
    return Extension(
        name=name,
        version=data["version"],
        source=_source(data, folder),
        configure=tuple(data.get("configure", ())),
        so_name=data.get("so_name", name),
    )


def agent_untested(recipe: "Recipe") -> str | None:
    """Why the agent's PHP findings are not vouched for on this recipe's PHP, or None."""
    line = minor(recipe.php.version)
    if line in AGENT_TESTED_PHP:
        return None
    return (f"asanlab's agent is not tested on PHP {line} (tested: {', '.join(AGENT_TESTED_PHP)}): sanitizer "
            "reports are as exact as anywhere, but the PHP backtraces, lines and variables it adds may be "
            "missing or wrong")


def default_compiler_version(base_image: str) -> int:
    """clang's major version for a base image: the one its Debian release ships, else clang-14."""
    name = base_image.split("@", 1)[0].rsplit("/", 1)[-1]
    repo, _, tag = name.partition(":")
    if repo == "debian":
        return DEBIAN_CLANG.get(tag.split("-", 1)[0], DEFAULT_COMPILER_VERSION)
    return DEFAULT_COMPILER_VERSION


def _build(data: dict, path: Path | None, folder: Path) -> Recipe:
    php = data["php"]
    san = data.get("sanitizers", {})
    runtime = data.get("runtime", {})
    suppressions = list(runtime.get("suppressions", ()))
    if "suppressions_file" in runtime:
        for line in (folder / runtime["suppressions_file"]).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                suppressions.append(line)
    return Recipe(
        name=data["name"],
        path=path,
        base_image=data.get("base_image", DEFAULT_BASE_IMAGE),
        compiler_version=data.get("compiler", {}).get("version") or default_compiler_version(
            data.get("base_image", DEFAULT_BASE_IMAGE)),
        optimize=data.get("compiler", {}).get("optimize", DEFAULT_OPTIMIZE),
        php=Php(
            version=php["version"],
            source=_source(php, folder),
            configure=tuple(php.get("configure", ())),
            debug=php.get("debug", False),
            zts=php.get("zts", False),
        ),
        swoole=_extension(data["swoole"], folder, "swoole") if data.get("swoole") else None,
        extensions=tuple(_extension(e, folder) for e in data.get("extensions", ())),
        sanitizers=sanitizers_of(san, data.get("tools")),
        tools=tuple(t for t in TOOLS if t in (data.get("tools") or ())),
        build_packages=tuple(data.get("packages", {}).get("build", ())),
        runtime_packages=tuple(data.get("packages", {}).get("runtime", ())),
        runtime=Runtime(
            asan_options=dict(runtime.get("asan_options", {})),
            lsan_options=dict(runtime.get("lsan_options", {})),
            ubsan_options=dict(runtime.get("ubsan_options", {})),
            suppressions=tuple(suppressions),
        ),
        raw=data,
    )


@dataclass(frozen=True)
class Cell:
    """One combination of a recipe's matrix: a recipe of its own, or the reason it is skipped."""
    name: str
    axes: dict[str, str]
    recipe: Recipe | None
    skipped: str | None = None


def sanitizer_label(given: dict, tools: list[str] | tuple[str, ...] = ()) -> str:
    """The tag part naming a recipe's sanitizers: asan-ubsan, asan-noleak, ubsan, ..."""
    san = sanitizers_of(given, tools)
    parts = []
    if san.address:
        parts.append("asan" if san.leak else "asan-noleak")
    if san.undefined:
        parts.append("ubsan")
    return "-".join(parts) or ("debug" if tools else "none")


def expand(r: Recipe) -> list[Cell]:
    """The recipe's matrix, one cell per combination, in the order written. Without a matrix: one cell."""
    import copy
    import itertools

    matrix = r.raw.get("matrix")
    if not matrix:
        return [Cell(r.name, {}, r)]
    base = {k: v for k, v in r.raw.items() if k != "matrix"}
    phps = matrix.get("php") or [base["php"]["version"]]
    swooles = matrix.get("swoole") or ([base["swoole"]["version"]] if base.get("swoole") else [None])
    sans = matrix.get("sanitizers") or [base.get("sanitizers", {})]
    cells = []
    for php, sw, san in itertools.product(phps, swooles, sans):
        data = copy.deepcopy(base)
        data["php"]["version"] = php
        if sw is not None:
            data["swoole"] = {**data.get("swoole", {}), "version": sw}
        data["sanitizers"] = dict(san)
        label = sanitizer_label(san, base.get("tools") or ())
        name = f"{base['name']}-php{php}" + (f"-swoole{sw}" if sw else "") + f"-{label}"
        data["name"] = name
        axes = {"php": php, "swoole": sw or "", "sanitizers": label}
        problems = _semantic_problems(data, r.folder)
        if problems:
            cells.append(Cell(name, axes, None, "; ".join(m for _, m in problems)))
        else:
            cells.append(Cell(name, axes, _build(data, r.path, r.folder)))
    return cells
