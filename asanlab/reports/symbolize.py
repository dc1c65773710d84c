"""Offline symbolization: `module+0xoffset` frames resolved by llvm-symbolizer run in the session's image.

Reports written without a symbolizer (a production debug run, `symbolize=0`) name only module and
offset. The image that produced them has the same binaries with their debug information and
asanlab ships llvm-symbolizer in it, so one short container resolves them all. The parsing of the
symbolizer's output and the rewriting of frames are pure.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from .. import containers, untrusted
from ..docker_client import docker_errors
from ..errors import UsageError
from .sanitizers import Report

MARK = "@@asanlab-module "
SYMBOLIZER = "/usr/local/bin/llvm-symbolizer"
OFFSET = re.compile(r"0x[0-9a-fA-F]{1,16}")


def wanted(reports: list[Report]) -> dict[str, set[str]]:
    """module -> offsets of the frames that have no source location yet."""
    out: dict[str, set[str]] = {}
    for r in reports:
        for f in all_frames(r):
            # Both come from a log that may be someone else's: an offset is a hex number or nothing.
            if f.file is None and f.module and f.offset and f.module.startswith("/") and OFFSET.fullmatch(f.offset):
                out.setdefault(f.module, set()).add(f.offset)
    return out


def all_frames(r: Report):
    yield from r.frames
    yield from r.freed_by
    yield from r.allocated_by
    for stack in r.other_stacks:
        yield from stack


def script(modules: dict[str, set[str]]) -> str:
    """One shell script for the container: a marker line, then the symbolizer's answer, per module."""
    parts = []
    for module, offsets in sorted(modules.items()):
        args = " ".join(shlex.quote(o) for o in sorted(offsets) if OFFSET.fullmatch(o))
        parts.append(f"echo {shlex.quote(MARK + module)}; "
                     f"{SYMBOLIZER} --obj={shlex.quote(module)} {args} 2>/dev/null || true")
    return "; ".join(parts)


def parse_output(text: str, modules: dict[str, set[str]]) -> dict[tuple[str, str], dict]:
    """(module, offset) -> {function, file, line, column}. llvm-symbolizer answers each address with
    lines "function" / "file:line:col" (more pairs when inlined: the first is the innermost) and a
    blank line; unknown ones are "??" and "??:0:0"."""
    out: dict[tuple[str, str], dict] = {}
    for block in text.split(MARK)[1:]:
        module, _, body = block.partition("\n")
        offsets = sorted(modules.get(module, ()))
        answers = [a for a in re.split(r"\n\s*\n", body.strip("\n")) if a.strip()]
        for offset, answer in zip(offsets, answers):
            lines = answer.splitlines()
            if len(lines) < 2:
                continue
            function, location = lines[0].strip(), lines[1].strip()
            m = re.match(r"^(?P<file>.+?):(?P<line>\d+)(?::(?P<col>\d+))?$", location)
            if function == "??" and (not m or m.group("file") == "??"):
                continue
            info: dict = {"function": None if function == "??" else function}
            if m and m.group("file") != "??" and m.group("line") != "0":
                info.update(file=m.group("file"), line=int(m.group("line")),
                            column=int(m.group("col")) if m.group("col") else None)
            out[(module, offset)] = info
    return out


def apply(reports: list[Report], table: dict[tuple[str, str], dict]) -> int:
    """Fill in the frames the table knows; returns how many changed."""
    changed = 0
    for r in reports:
        for f in all_frames(r):
            info = table.get((f.module or "", f.offset or ""))
            if info and f.file is None:
                f.function = info.get("function") or f.function
                f.file, f.line, f.column = info.get("file"), info.get("line"), info.get("column")
                changed += 1
    return changed


def resolve(client, image_id: str, modules: dict[str, set[str]]) -> dict[tuple[str, str], dict]:
    from docker.errors import ImageNotFound

    with docker_errors(f"llvm-symbolizer could not run in {image_id[:19]}"):
        try:
            client.images.get(image_id)
        except ImageNotFound:
            raise UsageError(f"image {image_id} is no longer on this machine: rebuild it from the session's recipe "
                             "to symbolize its reports") from None
        # stdout only: a shell's complaint on stderr would be parsed as a symbolizer's answer.
        text = containers.call(client, image_id, ["sh", "-c", script(modules)], role="symbolize", timeout=300,
                               stderr=False).output
    return parse_output(text, modules)


def load_cache(path: Path) -> dict[tuple[str, str], dict]:
    try:
        data = json.loads(untrusted.read_text(path))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a symbols file asanlab wrote ({e}); delete it to symbolize again") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a symbols file asanlab wrote; delete it to symbolize again")
    fields = {"function": str, "file": str, "line": int, "column": int}
    return {tuple(k.rsplit(" ", 1)): {f: v[f] for f in fields
                                      if f in v and isinstance(v[f], (fields[f], type(None))) and not isinstance(v[f], bool)}
            for k, v in data.items() if " " in k and isinstance(v, dict)}


def cache_body(table: dict[tuple[str, str], dict]) -> bytes:
    return (json.dumps({f"{m} {o}": v for (m, o), v in sorted(table.items())}, indent=1) + "\n").encode()
