"""What a sanitizer said, as data: a report (ASan error, LeakSanitizer leak, UBSan error, Valgrind
error, a crash the agent caught) and its stack frames. The parsers (asanlab/reports/sanitizers.py, asanlab/reports/valgrind.py) make them; the
rest of asanlab reads them. Pure: no parsing, no Docker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

from .php_stack import PhpStack


class Tool(str, Enum):
    """Who reported it. A str: JSON and comparisons with the names read from old sessions work."""

    ASAN = "AddressSanitizer"
    LSAN = "LeakSanitizer"
    UBSAN = "UndefinedBehaviorSanitizer"
    VALGRIND = "Valgrind"
    CRASH = "Crash"  # a signal no sanitizer handled, caught by asanlab's agent (reports/crash.py)

    def __str__(self) -> str:
        return self.value


# A return address in no mapped module: the frame-pointer unwinder read garbage (code without frame
# pointers, such as libffi, called on a Swoole coroutine stack). It and the frames after it differ
# from one stack to the next.
UNKNOWN_MODULE = "<unknown module>"
# ... or in the stack or the heap, where no code runs (the same, on the main thread's stack).
DATA_MAPPINGS = ("[stack]", "[heap]", "[anon")


@dataclass(slots=True)  # there are millions of frames in a long soak's logs
class Frame:
    index: int
    function: str | None = None
    file: str | None = None
    line: int | None = None
    column: int | None = None
    module: str | None = None
    offset: str | None = None

    def location(self) -> str:
        if self.file:
            return f"{self.file}:{self.line}" if self.line else self.file
        if self.module:
            return f"{self.module}+{self.offset}" if self.offset else self.module
        return "?"

    def describe(self) -> str:
        return f"{self.function or '??'} {self.location()}"

    @property
    def misread(self) -> bool:
        """Unwinder garbage: this frame and those after it say nothing about the program."""
        return self.module is not None and (self.module == UNKNOWN_MODULE or self.module.startswith(DATA_MAPPINGS))


@dataclass
class Report:
    tool: Tool
    kind: str  # "heap-buffer-overflow", "double-free", "direct-leak", "runtime-error", ...
    pid: int | None = None
    source: str = ""  # the file it came from
    access: str | None = None  # READ / WRITE
    size: int | None = None
    address: str | None = None
    thread: str | None = None
    message: str = ""
    frames: list[Frame] = field(default_factory=list)
    freed_by: list[Frame] = field(default_factory=list)
    allocated_by: list[Frame] = field(default_factory=list)
    # Further stacks a report prints: odr-violation's second registration, the frame a stack address
    # lies in.
    other_stacks: list[list[Frame]] = field(default_factory=list)
    leaked_bytes: int | None = None
    leaked_objects: int | None = None
    summary: str | None = None
    dedup_token: str | None = None
    objects: list[str] = field(default_factory=list)  # a leak's object addresses (report_objects=1)
    object_bytes: list[int] = field(default_factory=list)  # ... and their sizes
    complete: bool = True
    suspect: bool = False  # written after ASan lost track of the stack (a coroutine switch)
    text: str = ""
    php: PhpStack | None = None  # the PHP code running when it was reported (asanlab's agent)
    # For a leak: how many of its listed objects the agent saw allocated while no PHP code ran (PHP's
    # and the extensions' start-up, compiling the script): all of them makes it a start-up leak.
    allocated_outside_php: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["objects"], d["object_bytes"]  # read again from the raw log when needed, noise in the output
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        d = dict(d)
        d["php"] = PhpStack.from_dict(d["php"]) if d.get("php") else None
        for key in ("frames", "freed_by", "allocated_by"):
            d[key] = [Frame(**f) for f in d.get(key, [])]
        d["other_stacks"] = [[Frame(**f) for f in stack] for stack in d.get("other_stacks", [])]
        d["tool"] = Tool(d["tool"])
        return cls(**d)

    @property
    def is_leak(self) -> bool:
        """Memory never freed: LeakSanitizer's direct and indirect leaks, Valgrind's lost blocks."""
        return self.kind.endswith("-leak")

    @property
    def is_undefined(self) -> bool:
        return self.tool is Tool.UBSAN
