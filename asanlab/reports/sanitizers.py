"""Sanitizer logs -> reports. Pure text parsing: no Docker, no files but what it is handed.

Reads AddressSanitizer error reports, LeakSanitizer records (each direct or indirect leak is one
report), and UndefinedBehaviorSanitizer runtime errors. A report that ends before its SUMMARY
(a process killed mid-write) is kept and marked incomplete.
"""

from __future__ import annotations

import itertools
import re
from typing import Iterable, Iterator

from .notices import strip_pid
from .types import Frame, Report, Tool
from .valgrind import is_valgrind_xml, parse_xml
ASAN_ERROR = re.compile(r"^==(\d+)==ERROR: AddressSanitizer: (?P<rest>.*)$")
LSAN_ERROR = re.compile(r"^==(\d+)==ERROR: LeakSanitizer: detected memory leaks")
LEAK_RECORD = re.compile(r"^(?P<kind>Direct|Indirect) leak of (?P<bytes>\d+) byte\(s\) in (?P<objects>\d+) object\(s\) allocated from:")
UBSAN = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): runtime error: (?P<msg>.*)$")
ACCESS = re.compile(r"^(?P<access>READ|WRITE) of size (?P<size>\d+) at (?P<addr>0x[0-9a-f]+) thread (?P<thread>T\d+)")
SIGNAL_CAUSE = re.compile(r"The signal is caused by a (?P<access>READ|WRITE|UNKNOWN) memory access")
FRAME = re.compile(r"^\s*#(?P<n>\d+) (?P<pc>0x[0-9a-f]+)(?: in (?P<rest>.*)|\s+(?P<loc>\(.*\)))\s*$")
MODULE_LOC = re.compile(r"^\((?P<module>[^()]+?)\+(?P<offset>0x[0-9a-f]+)\)$")
SECTION = re.compile(r"^(?P<what>freed by thread|previously allocated by thread|allocated by thread) (?P<thread>T\d+)")
SUMMARY = re.compile(r"^SUMMARY: (?P<tool>\w+Sanitizer): (?P<text>.*)$")
DEDUP = re.compile(r"^DEDUP_TOKEN: (?P<token>.*)$")
# LSAN_OPTIONS report_objects=1 (set by `asanlab run` with its agent): after each leak's stack,
# "Objects leaked above:" and one "0x602000000010 (7 bytes)" line per object.
OBJECTS_HEADER = "Objects leaked above:"
OBJECT_LINE = re.compile(r"^(?P<addr>0x[0-9a-f]{1,16}) \((?P<bytes>\d{1,18}) bytes\)$")
MAX_OBJECTS = 10_000  # per leak: enough to name its PHP code, bounded for a leak of millions
ADDR_KIND = re.compile(r"^(?P<kind>[A-Za-z][A-Za-z-]*(?: [a-z-]+)*?)(?: on (?:unknown )?address| on 0x| \(|:| in thread|$)")


FRAME_HEAD = re.compile(r"\s*#(\d+) 0x[0-9a-f]+( in |\s+(?=\())")
MODULE_TAIL = re.compile(r"\((?P<module>[^()]+?)\+(?P<offset>0x[0-9a-f]+)\)$")
FILE_TAIL = re.compile(r"\.\w+(:\d+)*$")
# A frame's text after its address -> its fields. The same stacks come back from every worker and
# every request, with only the address changing: most frames of a long log are parsed once.
_FRAME_CACHE: dict[str, tuple] = {}
_FRAME_CACHE_MAX = 200_000


def parse_frame(line: str) -> Frame | None:
    m = FRAME_HEAD.match(line)
    if m is None:
        return None
    key = line[m.start(2):]
    fields = _FRAME_CACHE.get(key)
    if fields is None:
        fields = _frame_fields(line[m.end():], m.group(2) == " in ")
        if fields is None:
            return None
        if len(_FRAME_CACHE) >= _FRAME_CACHE_MAX:
            _FRAME_CACHE.clear()
        _FRAME_CACHE[key] = fields
    return Frame(int(m.group(1)), *fields)


def _frame_fields(rest: str, named: bool) -> tuple | None:
    """(function, file, line, column, module, offset) of what follows a frame's address."""
    cut = rest.find(" (BuildId: ")
    rest = (rest[:cut] if cut >= 0 else rest).strip()
    if not named:  # "(module+0xoffset)" alone
        if not (rest.startswith("(") and rest.endswith(")")):
            return None
        module = MODULE_TAIL.match(rest)
        return (None, None, None, None, module.group(1), module.group(2)) if module else \
            (None, None, None, None, rest.strip("()"), None)
    if rest.endswith(")"):
        # "func (module+0xoff)": the module part is the last parenthesised group
        idx = rest.rfind(" (")
        module = MODULE_TAIL.fullmatch(rest, idx + 1) if idx > 0 else None
        if module:
            return rest[:idx], None, None, None, module.group(1), module.group(2)
    head, _, loc = rest.rpartition(" ")
    if head and ("/" in loc or FILE_TAIL.search(loc)):
        parts = loc.split(":")
        line = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        column = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        return head, parts[0], line, column, None, None
    return rest, None, None, None, None, None


def _asan_kind(rest: str) -> str:
    rest = rest.strip()
    if rest.startswith("attempting double-free"):
        return "double-free"
    if rest.startswith("attempting free on address which was not malloc"):
        return "bad-free"
    m = ADDR_KIND.match(rest)
    return m.group("kind").strip() if m else rest.split(" ")[0]


def parse(text: str, source: str = "") -> list[Report]:
    """All reports in one sanitizer log (or a stream of several processes' logs), or a valgrind XML file."""
    if is_valgrind_xml(text[:2000]):
        return parse_xml(text, source)
    return _parse_lines(text.splitlines(), source, STACK_SWITCH in text)


def _parse_lines(lines: list[str], source: str, may_switch: bool = True) -> list[Report]:
    """`may_switch`: whether the text holds a stack-switch warning at all (one search of the whole
    text instead of one per line)."""
    reports: list[Report] = []
    i = 0
    n = len(lines)
    switched = False
    while i < n:
        line = lines[i]
        if may_switch and STACK_SWITCH in line:
            switched = True
        if not (line[:2] == "==" or "runtime error: " in line):
            i += 1
            continue
        before = len(reports)
        if m := ASAN_ERROR.match(line):
            i = _parse_asan(lines, i, int(m.group(1)), m.group("rest"), source, reports)
        elif m := LSAN_ERROR.match(line):
            i = _parse_lsan(lines, i + 1, int(m.group(1)), source, reports)
        elif m := UBSAN.match(line):
            i = _parse_ubsan(lines, i, m, source, reports)
        else:
            i += 1
        if switched:
            for r in reports[before:]:
                r.suspect = True
    return reports


STACK_SWITCH = "ignoring requested __asan_handle_no_return"


# Where a report begins, found in whole chunks of a log: most of a long log is the app's output and
# heap profiles, which are never split into lines.
REPORT_START = re.compile(r"==\d+==ERROR: (?:AddressSanitizer: |LeakSanitizer: detected memory leaks)"
                          r"|(?!==)[^\s:][^:\n]*:\d+:\d+: runtime error: ")
START_MARKS = ("==ERROR: ", ": runtime error: ")


def _report_starts(text: str) -> list[int]:
    """Offsets of the lines of `text` that begin a report. Finds the fixed part of each form first
    (a plain substring search), then checks its line with the whole pattern."""
    starts = set()
    for mark in START_MARKS:
        k = text.find(mark)
        while k >= 0:
            line_start = text.rfind("\n", 0, k) + 1
            if REPORT_START.match(text, line_start):
                starts.add(line_start)
            k = text.find(mark, k + len(mark))
    return sorted(starts)


def _starts_report(line: str) -> bool:
    """Whether one line begins a report (the live watcher reads line by line)."""
    return bool(REPORT_START.match(line))


# What follows a report up to the next one is kept to this size: a report's own text is far smaller.
MAX_BLOCK = 64 << 20


def iter_parse(lines: Iterable[str], source: str = "") -> Iterator[Report]:
    """parse() for a stream of lines."""
    return iter_parse_chunks((line if line.endswith("\n") else line + "\n" for line in lines), source)


def iter_parse_chunks(chunks: Iterable[str], source: str = "") -> Iterator[Report]:
    """parse() for a stream of text in pieces of any size, holding one report's text at a time:
    memory follows the largest report, not the log (logs of a long soak run to gigabytes)."""
    pending = ""  # the end of the stream's last chunk after its last newline
    offset = 0  # where `pending` starts in the stream
    block: list[str] = []  # the open report's text, from its first line on
    block_start = block_size = -1
    first_switch = -1  # where the first coroutine stack switch was seen
    for chunk in itertools.chain(chunks, [None]):
        text = pending + chunk if chunk is not None else pending + "\n" if pending else ""
        cut = text.rfind("\n") + 1
        body, pending = text[:cut], text[cut:]
        if first_switch < 0 and (k := body.find(STACK_SWITCH)) >= 0:
            first_switch = offset + k
        pos = 0
        for start in _report_starts(body):
            if block_start >= 0:
                block.append(body[pos:start])
                yield from _parse_block(block, source, 0 <= first_switch < block_start)
            block, block_start, block_size, pos = [], offset + start, 0, start
        if block_start >= 0 and block_size < MAX_BLOCK:
            block.append(body[pos:])
            block_size += cut - pos
        offset += cut
    if block_start >= 0:
        yield from _parse_block(block, source, 0 <= first_switch < block_start)


def _parse_block(block: list[str], source: str, switched: bool) -> list[Report]:
    text = "".join(block)
    reports = _parse_lines(text.splitlines(), source, STACK_SWITCH in text)
    if switched:
        for r in reports:
            r.suspect = True
    return reports


def _read_frames(lines: list[str], i: int) -> tuple[list[Frame], int]:
    frames: list[Frame] = []
    while i < len(lines):
        f = parse_frame(lines[i])
        if f is None:
            if frames or lines[i].strip():
                break
            i += 1
            continue
        frames.append(f)
        i += 1
    return frames, i


def _parse_asan(lines: list[str], start: int, pid: int, rest: str, source: str, out: list[Report]) -> int:
    kind = _asan_kind(rest)
    if kind == "detected memory leaks":  # LSan inside ASan prints its own header form
        return _parse_lsan(lines, start + 1, pid, source, out)
    r = Report(tool=Tool.ASAN, kind=kind, pid=pid, source=source, message=rest.strip(), complete=False)
    addr = re.search(r"(?:address|on) (0x[0-9a-f]+)", rest)
    r.address = addr.group(1) if addr else None
    i = start + 1
    current = r.frames
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("#"):  # most lines are frames: skip the other tests
            f = parse_frame(line)
            if f is not None:
                if f.index == 0 and current:  # a new stack without a section header
                    current = []
                    r.other_stacks.append(current)
                current.append(f)
                i += 1
                continue
        if line.startswith("==") and (ASAN_ERROR.match(line) or LSAN_ERROR.match(line)):
            break
        body = strip_pid(line)
        # One test per line on its first letter: the shadow-memory map and its legend are most of
        # what an error report prints besides its frames.
        first = body[:1]
        if first in "RW" and (m := ACCESS.match(body)):
            r.access, r.size, r.thread = m.group("access"), int(m.group("size")), m.group("thread")
        elif "signal is caused" in body and (m := SIGNAL_CAUSE.search(body)):
            r.access = m.group("access")
        elif first in "fpa" and (m := SECTION.match(body)):
            current = r.freed_by if m.group("what").startswith("freed") else r.allocated_by
        elif first == "D" and (m := DEDUP.match(body)):
            if r.dedup_token is None:  # each stack prints one; the first is the error's own
                r.dedup_token = m.group("token")
        elif first == "S" and (m := SUMMARY.match(body)):
            r.summary = m.group("text")
            # The summary names the kind canonically ("allocation-size-too-big", "calloc-overflow", ...),
            # where the first line may be a sentence ("requested allocation size ...").
            canonical = r.summary.split(" ", 1)[0].rstrip(":")
            if re.fullmatch(r"[A-Za-z][A-Za-z-]+", canonical):
                r.kind = canonical
            r.complete = True
            i += 1
            break
        i += 1
    r.text = "\n".join(lines[start:i])
    out.append(r)
    return i


def _parse_lsan(lines: list[str], i: int, pid: int, source: str, out: list[Report]) -> int:
    records: list[Report] = []
    finished = False
    while i < len(lines):
        body = strip_pid(lines[i])
        m = LEAK_RECORD.match(body)
        if m:
            start = i
            frames, i = _read_frames(lines, i + 1)
            records.append(Report(
                tool=Tool.LSAN, kind=f"{m.group('kind').lower()}-leak", pid=pid, source=source,
                message=body.strip(), leaked_bytes=int(m.group("bytes")), leaked_objects=int(m.group("objects")),
                frames=frames, allocated_by=frames, text="\n".join(lines[start:i]), complete=bool(frames)))
            continue
        if body.strip() == OBJECTS_HEADER and records:
            i += 1
            while i < len(lines) and (m := OBJECT_LINE.match(lines[i].strip())):
                if len(records[-1].objects) < MAX_OBJECTS:
                    records[-1].objects.append(m.group("addr"))
                    records[-1].object_bytes.append(int(m.group("bytes")))
                i += 1
            continue
        m = SUMMARY.match(body)
        if m:
            finished = True
            for r in records:
                r.summary = m.group("text")
            i += 1
            break
        if ASAN_ERROR.match(lines[i]) or LSAN_ERROR.match(lines[i]):
            break
        i += 1
    if not finished:
        for r in records:
            r.complete = False
    out.extend(records)
    return i


# UBSan's message -> the name of the check that fired (clang's -fsanitize= names); others stay
# "runtime-error". First match wins.
UBSAN_KINDS = [(re.compile(p), k) for p, k in (
    (r"^signed integer overflow", "signed-integer-overflow"),
    (r"^unsigned integer overflow", "unsigned-integer-overflow"),
    (r"^negation of .* cannot be represented", "signed-integer-overflow"),
    (r"^(shift exponent|left shift of)", "shift"),
    (r"^division by zero", "integer-divide-by-zero"),
    (r"misaligned address", "alignment"),
    (r"null pointer (passed as argument|returned from function)", "nonnull-attribute"),
    (r"(member access within|load of|store to|member call on|reference binding to) null pointer", "null"),
    (r"(applying (non-)?zero offset|pointer index expression|addition of unsigned offset)", "pointer-overflow"),
    (r"^index -?\d+ out of bounds", "bounds"),
    (r"is not a valid value for type", "invalid-value"),
    (r"through pointer to incorrect function type", "function"),
    (r"^execution reached an unreachable program point", "unreachable"),
    (r"^execution reached the end of a value-returning function", "return"),
    (r"^variable length array bound", "vla-bound"),
    (r"is outside the range of representable values", "float-cast-overflow"),
    (r"^implicit conversion", "implicit-conversion"),
)]


def ubsan_kind(message: str) -> str:
    return next((k for rx, k in UBSAN_KINDS if rx.search(message)), "runtime-error")


def _parse_ubsan(lines: list[str], i: int, m: re.Match, source: str, out: list[Report]) -> int:
    r = Report(tool=Tool.UBSAN, kind=ubsan_kind(m.group("msg")), source=source,
               message=m.group("msg"))
    r.frames = [Frame(index=-1, file=m.group("file"), line=int(m.group("line")), column=int(m.group("col")))]
    start = i
    k = i + 1
    # Some checks (alignment, ...) print a note with the memory around the address before the stack:
    # "0x7f..d2: note: pointer points here", a hex dump and a caret line.
    if k < len(lines) and ": note: " in lines[k]:
        k += 1
        while k < len(lines) and k <= i + 4 and lines[k][:1] == " " and not lines[k].lstrip().startswith("#"):
            k += 1
    frames, j = _read_frames(lines, k)
    if frames:
        r.frames = frames
        i = j
    else:
        i += 1
    if i < len(lines):
        sm = SUMMARY.match(strip_pid(lines[i]))
        if sm:
            r.summary = sm.group("text")
            i += 1
    r.text = "\n".join(lines[start:i])
    out.append(r)
    return i
