"""Crashes asanlab's agent caught: a PHP process that died by SIGSEGV, SIGBUS, SIGABRT, SIGILL or
SIGFPE where no sanitizer handles the signal (an image without ASan). Pure: no Docker.

The agent (images/agent/crash.c) writes crash.<pid> in the session's raw/php folder: the signal,
glibc's backtrace from the faulting frame, and, where the image has gdb, gdb's output in parts
headed "asanlab-gdb <part>" (bt full, registers, zbacktrace, co_bt; asanlab/data/crash-gdb.py). Its
PHP stack is the block "crash <pid>" of php-backtrace.<pid>, as for ASan's errors.
"""

from __future__ import annotations

import io
import re
import signal
from pathlib import Path

from .. import untrusted
from .php_stack import LINE_NUMBER, PhpFrame, PhpStack
from .types import Frame, Report, Tool

FILE_PREFIX = "crash."
MAX_FILE_BYTES = 8 << 20  # gdb's bt full of a deep stack is large; a crash loop appends many
KINDS = {"SIGSEGV": "SEGV", "SIGBUS": "BUS", "SIGABRT": "ABRT", "SIGILL": "ILL", "SIGFPE": "FPE"}
TRAMPOLINE = "<signal handler called>"
# glibc's backtrace_symbols_fd: "/opt/php/bin/php(zend_ffi_write+0x1d)[0x55d0c0ffee]", "/lib/x.so(+0x7b16)[0x7f...]"
GLIBC_FRAME = re.compile(r"(?P<module>[^(\[]+)\((?P<function>[^+)]*)(?:\+(?P<offset>0x[0-9a-f]+))?\)\s*\[0x[0-9a-f]+\]")
# gdb's frame head: "#5  0x000055d0c0ffee in " or "#5  " (the frame's pc at a line's start)
GDB_FRAME = re.compile(r"#(\d+)\s+(?:0x[0-9a-f]+ in )?(.*)")
# zbacktrace (php-src's .gdbinit): "[0x7f0c2a814020] store(8) /app/app.php:5"
ZBACKTRACE = re.compile(r"\[0x[0-9a-f]+\] (?P<function>.+?)\(.*\) (?P<file>\S+):(?P<line>\d+)$")


def read_folder(folder: Path, stacks: dict[str, PhpStack] | None = None) -> list[Report]:
    """Every crash in the folder, each with its PHP stack from `stacks` (php_stack.read_folder)."""
    reports: list[Report] = []
    for f, text in untrusted.texts(folder, prefix=FILE_PREFIX, limit=MAX_FILE_BYTES):
        reports += parse(text, f.name)
    for r in reports:
        r.php = (stacks or {}).get(f"crash {r.pid}") or r.php
    return reports


def parse(text: str, source: str = "") -> list[Report]:
    """The crashes in one crash.<pid> file: one per "crash <pid>" header (a process that forked
    after the handler was set writes its own file; one header per file is the rule)."""
    reports, block = [], []
    for line in text.splitlines():
        if line.startswith("crash ") and block:
            reports.append(_report(block, source))
            block = []
        block.append(line)
    if block and block[0].startswith("crash "):
        reports.append(_report(block, source))
    return reports


def _report(lines: list[str], source: str) -> Report:
    head: dict[str, str] = {}
    glibc: list[str] = []
    parts: dict[str, list[str]] = {}
    where = "head"
    for line in lines:
        if where == "head" and line == "backtrace":
            where = "backtrace"
        elif where in ("head", "backtrace") and line == "gdb":
            where = "gdb"
        elif line == "end" and where != "end":
            where = "end"
        elif where == "head":
            key, _, value = line.partition(" ")
            head[key] = value.strip()
        elif where == "backtrace":
            glibc.append(line)
        elif where == "gdb" and line.startswith("asanlab-gdb "):
            part = line[len("asanlab-gdb "):]
            if not part.startswith("failed"):
                parts[part] = []
                current = parts[part]
                continue
        if where == "gdb" and parts:
            current.append(line)
    number, _, name = head.get("signal", "0 ?").partition(" ")
    kind = KINDS.get(name, name or "signal")
    code = int(head["code"]) if re.fullmatch(r"-?\d{1,9}", head.get("code", "")) else None
    faulted = code is not None and code > 0 and kind in ("SEGV", "BUS", "ILL", "FPE")
    address = head.get("address") if faulted else None
    pid = int(head["crash"]) if LINE_NUMBER.fullmatch(head.get("crash", "")) else None
    frames = gdb_frames(parts.get("bt", [])) or glibc_frames(glibc)
    how = f"on address {address}" if address else ("raised (abort() or a kill)" if not faulted else "")
    r = Report(tool=Tool.CRASH, kind=kind, pid=pid, source=source, address=address,
               thread=head.get("thread"), message=f"{kind} {how} (signal {number} {name})".replace("  ", " "),
               frames=frames, text="\n".join(lines) + "\n",
               complete=lines[-1] == "end" if lines else False)
    php = zbacktrace(parts.get("zbacktrace", []))
    if php.frames:
        r.php = php
    return r


ABNORMAL_EXIT = re.compile(r"(worker|task_worker|manager)?\(?pid=(?P<pid>\d+), id=(?P<id>\d+)\)? abnormal exit, "
                           r"status=(?P<status>-?\d+), signal=(?P<signal>\d+)")


def abnormal_exit(line: str) -> dict | None:
    """Swoole's manager's line for a process that ended abnormally, as the session keeps it."""
    m = ABNORMAL_EXIT.search(line)
    if m is None:
        return None
    return {"line": line.strip(), "pid": int(m.group("pid")), "status": int(m.group("status")),
            "signal": int(m.group("signal"))}


def abnormal_exits_in(path: Path) -> list[dict]:
    """The abnormal exits a whole output.log holds (a session closed by a later asanlab)."""
    try:
        with untrusted.open_file(path, limit=untrusted.LOG_LIMIT) as fh:
            text = io.TextIOWrapper(fh, errors="replace")
            # Lines read in bounded pieces: a line of gigabytes is not held whole.
            return [e for e in map(abnormal_exit, iter(lambda: text.readline(1 << 16), "")) if e is not None]
    except (OSError, untrusted.UntrustedFileError):
        return []


def from_abnormal_exits(exits: list[dict], reports: list[Report]) -> list[Report]:
    """A Swoole process that died by a crash signal and left no report of its own (an image asanlab
    did not build has no crash handler): the manager's `abnormal exit` line is then all the evidence
    there is, and it is still a crash. `exits` are run's records of those lines (abnormal_exit)."""
    reported = {r.pid for r in reports if r.pid is not None and not r.is_leak}  # an error or a crash names it
    out: list[Report] = []
    for e in exits:
        try:
            name = signal.Signals(int(e["signal"])).name
            pid = int(e["pid"])
        except (KeyError, TypeError, ValueError):
            continue
        if name not in KINDS or pid in reported:
            continue
        line = ABNORMAL_EXIT.search(str(e.get("line", "")))
        role = line.group(1) if line and line.group(1) else "process"
        kind = KINDS[name]
        out.append(Report(tool=Tool.CRASH, kind=kind, pid=pid, source="output.log",
                          message=f"{kind} (signal {e['signal']} {name}) in a Swoole {role.replace('_', ' ')} "
                                  "that left no stack",
                          text=str(e.get("line", "")) + "\n"))
    return out


def main_died_by(session: dict) -> int | None:
    """The signal the container's main process ended by on its own (exit code 128 + the signal,
    Docker's convention), not by asanlab's stop; None otherwise."""
    code = session.get("exit_code")
    if session.get("stop_reason") != "exited" or not isinstance(code, int) or not 128 < code < 128 + 32:
        return None
    return code - 128


def from_main_exit(session: dict, reports: list[Report]) -> list[Report]:
    """The app's main process (pid 1 in its container) ended by itself with a crash signal and left
    no report of its own: a crash, as a worker's abnormal exit is."""
    number = main_died_by(session)
    try:
        name = signal.Signals(number).name if number is not None else ""
    except ValueError:
        return []
    if name not in KINDS or any(r.pid == 1 and not r.is_leak for r in reports):
        return []
    kind = KINDS[name]
    return [Report(tool=Tool.CRASH, kind=kind, pid=1, source="session.json",
                   message=f"{kind} (signal {number} {name}) in the app's main process, which left no stack",
                   text=f"the container's main process exited with code {number + 128} (128 + signal {number})\n")]


def gdb_frames(lines: list[str]) -> list[Frame]:
    """The frames of gdb's bt under the signal's trampoline (above it: the agent's handler), renumbered."""
    frames: list[Frame] = []
    for line in lines:
        m = GDB_FRAME.fullmatch(line)
        if m is None:
            continue  # bt full's locals
        rest = m.group(2).strip()
        if rest == TRAMPOLINE:
            frames = []
            continue
        frames.append(_gdb_frame(len(frames), rest))
    return frames


def _gdb_frame(index: int, rest: str) -> Frame:
    module = None
    if " from " in rest:
        rest, _, module = rest.rpartition(" from ")
    file = line = None
    at = rest.rfind(" at ")
    if at > 0 and rest.endswith(tuple("0123456789")) and rest.rfind(")") < at:
        where, _, number = rest[at + 4:].rpartition(":")
        if where and LINE_NUMBER.fullmatch(number):
            rest, file, line = rest[:at], where, int(number)
    function = _without_arguments(rest)
    return Frame(index, function=None if function in ("??", "") else function, file=file, line=line,
                 module=module)


def _without_arguments(text: str) -> str:
    """`name (a=1, b=(x))` -> `name`: the last parenthesised group is the arguments (C++ names hold
    parentheses and spaces of their own)."""
    text = text.strip()
    if not text.endswith(")"):
        return text
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return text[:i].strip()
    return text


def glibc_frames(lines: list[str]) -> list[Frame]:
    frames = []
    for line in lines:
        m = GLIBC_FRAME.fullmatch(line.strip())
        if m is None:
            continue
        function = m.group("function") or None
        frames.append(Frame(len(frames), function=function, module=m.group("module"),
                            offset=None if function else m.group("offset")))
    return frames


def zbacktrace(lines: list[str]) -> PhpStack:
    """php-src's zbacktrace, for when the agent could not write the PHP block."""
    stack = PhpStack()
    for line in lines:
        m = ZBACKTRACE.match(line.strip())
        if m:
            stack.frames.append(PhpFrame(m.group("function"), m.group("file"), int(m.group("line"))))
    return stack
