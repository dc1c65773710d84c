"""Findings as the text a user reads first, and as JSON. Pure: strings in, strings out."""

from __future__ import annotations

import json
import signal
from dataclasses import asdict

from .. import __version__
from .crash import main_died_by
from .findings import (RUNTIME_FUNCTIONS, RUNTIME_LOCATIONS, Category, Finding, cut_short, failing, frame_class,
                       meaningful)
from .types import Frame, Tool

# What `asanlab run` adds to the app's command line (run.SIGTERM_PREPEND lives in this folder).
ASANLAB_PREPEND = "auto_prepend_file=/asanlab/config/"


def user_command(command: list[str] | None) -> list[str]:
    """A session's command as the user gave it: without the prepend asanlab adds."""
    out = list(command or [])
    if out[1:2] == ["-d"] and out[2:3] and out[2].startswith(ASANLAB_PREPEND):
        del out[1:3]
    return out


def shown_command(command: list[str] | None) -> str:
    return " ".join(user_command(command))

FRAMES_SHOWN = 6
JSON_SCHEMA = 1


def _describe(f: Frame) -> str:
    """A frame as printed. The sanitizer's allocator functions are linked into the program itself
    without line information: named as what they are, not as an address in php."""
    if f.file is None and f.module and f.function and RUNTIME_FUNCTIONS.match(f.function) and \
            not RUNTIME_LOCATIONS.search(f.module):
        return f"{f.function} (the sanitizer's allocator, in {f.module.rsplit('/', 1)[-1]})"
    return f.describe()


def _frames(frames: list[Frame], indent: str) -> list[str]:
    shown = meaningful(frames)[:FRAMES_SHOWN]
    out = []
    for f in shown:
        mark = "*" if frame_class(f) in ("user", "php-ext", "swoole", "extension") else " "
        out.append(f"{indent}{mark} #{f.index} {_describe(f)}")
    hidden = len(frames) - len(shown)
    if hidden > 0:
        out.append(f"{indent}  ... {hidden} more frame(s) (runtime, libc or deeper)")
    return out


def title(f: Finding) -> str:
    ex = f.example
    if f.is_leak:
        return f"LEAK {f.leaked_bytes} byte(s) in {f.leaked_objects} object(s)"
    access = f" {ex.access} of size {ex.size}" if ex and ex.access and ex.size else (f" {ex.access}" if ex and ex.access else "")
    if f.tool is Tool.UBSAN:
        return f"UNDEFINED {ex.message if ex else f.kind}"
    if f.tool is Tool.CRASH:
        return f"CRASH {ex.message if ex else f.kind}"
    return f"ERROR {f.kind}{access}"


def _died_by(session: dict) -> str | None:
    """"signal 11 (SIGSEGV)" when the container's main process ended by a signal on its own (exit
    code 128 + the signal, Docker's convention), not by asanlab's stop."""
    number = main_died_by(session)
    if number is None:
        return None
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def app_exit(session: dict) -> str:
    """The app's own exit status, said as the app's: asanlab's exit code is the findings' (or the
    soak's verdict), and an app asanlab stopped exits however its SIGTERM handling makes it."""
    code, reason = session.get("exit_code"), session.get("stop_reason")
    if code is None:
        return "the app's exit status unknown"
    stopped = reason not in (None, "exited")
    return f"the app's exit status {code}" + (f" (after asanlab stopped it: {reason})" if stopped else "")


def render(session: dict | None, findings: list[Finding], *, show_all: bool = False, full: bool = False,
           notices: list | None = None) -> str:
    lines: list[str] = []
    if session:
        lines.append(f"session {session['id']}: {shown_command(session.get('command'))}")
        image = session.get("image") or {}
        lines.append(f"  image {image.get('ref')}  status {session.get('status')} ({session.get('stop_reason')})"
                     f"  {app_exit(session)}")
        died = _died_by(session)
        if died:
            lines.append(f"  the app's main process died by {died} before anything stopped it")
        for a in session.get("abnormal_exits") or []:
            lines.append(f"  server: {a['line']}")
        cost = session.get("php_origins")
        if cost and cost.get("share") is not None:
            lines.append(f"  naming leaks' PHP lines took {cost['kept_bytes'] / 1024:.0f} KiB in pid {cost['pid']}, "
                         f"{cost['share']:.1%} of its largest live heap ({cost['live_heap'] / 1048576:.1f} MiB), the most "
                         f"of {cost['processes']} process(es)")
    for n in notices or []:
        lines.append(f"  NOTE ({n.kind}, not a finding): {n.message}")
        lines.append(f"       {n.remedy}")
    startup = [f for f in findings if f.category is Category.STARTUP_LEAK]
    shown = findings if show_all else failing(findings)
    counts: dict[str, int] = {}
    for f in shown:
        counts[f.category] = counts.get(f.category, 0) + 1
    summary = ", ".join(f"{n} {c}" for c, n in counts.items()) or "none"
    lines.append(f"{len(shown)} finding(s): {summary}")
    if startup and not show_all:
        records = sum(f.count for f in startup)
        pids = {p for f in startup for p in f.pids}
        nbytes = sum(f.leaked_bytes for f in startup)
        lines.append(f"  + start-up/shutdown: {records} leak record(s), {nbytes} bytes, in {len(pids)} process(es), "
                     f"{len(startup)} signature(s) folded (allocations made while modules start, never freed "
                     "because the process exits without module shutdown; --all shows them)")
    for n, f in enumerate(shown, 1):
        lines.append("")
        pids = ", ".join(map(str, f.pids[:8])) + (" ..." if len(f.pids) > 8 else "")
        incomplete = f"  ({f.incomplete} incomplete)" if f.incomplete else ""
        if f.example is not None and f.example.suspect:
            incomplete += "  (suspect: after a coroutine stack switch)"
        lines.append(f"[{n}] {title(f)}  x{f.count} in pid {pids}{incomplete}  id {f.id}")
        lines.append(f"    signature: {f.signature}")
        ex = f.example
        if ex is None:
            continue
        if ex.php is not None and ex.php.allocated_objects is not None:
            lines.append(f"    {ex.php.label}: {ex.php.path()}  "
                         f"({ex.php.allocated_objects} of {ex.php.listed_objects} objects)")
        elif ex.php is not None:
            lines.append(f"    in PHP: {ex.php.path() or 'no PHP code was running'}")
            if ex.php.request:
                lines.append(f"    request: {ex.php.request}")
            if ex.php.coroutine is not None:
                lines.append(f"    coroutine: {ex.php.coroutine}")
        lines += _frames(ex.frames, "    ")
        if f.tool is Tool.CRASH and not ex.frames and ex.php is None:
            lines.append("    no C or PHP stack: nothing in the process caught the signal. An image asanlab did not "
                         "build has no crash handler: build one from a recipe (`tools: [gdb]` adds gdb's backtrace)")
        if f.cut_short:
            lines.append(_cut_hint(f.cut_short, "    "))
        # An error's own stack is unwound completely when it happens; the free and the allocation
        # were unwound with frame pointers when they happened.
        for label, stack in (("freed by", ex.freed_by), ("allocated by", [] if ex.is_leak else ex.allocated_by)):
            if stack:
                lines.append(f"    {label}:")
                lines += _frames(stack, "      ")
                if ex.tool == Tool.ASAN and (library := cut_short(stack)):
                    lines.append(_cut_hint(library, "      "))
        if ex.summary and not ex.is_leak:
            lines.append(f"    SUMMARY: {ex.summary}")
        if full:
            lines.append("    --- full report ---")
            lines += ["    " + t for t in ex.text.splitlines()]
    return "\n".join(lines) + "\n"


def _cut_hint(library: str, indent: str) -> str:
    return (f"{indent}(the C stack stops in {library}, built without frame pointers: --full-stacks unwinds "
            "through it, at about 3.5x the cost)")


def render_json(session: dict | None, findings: list[Finding], notices: list | None = None) -> str:
    return json.dumps({"schema": JSON_SCHEMA, "asanlab_version": __version__, "session": session,
                       "notices": [asdict(n) for n in notices or []],
                       "findings": [f.to_dict() for f in findings]}, indent=2) + "\n"
