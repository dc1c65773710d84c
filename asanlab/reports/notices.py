"""What a sanitizer says about itself rather than about the app (it could not stop threads, has no
symbolizer, saw a stack switch, crashed in a loop): infrastructure notices, each with its remedy. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# "==1234==" before each line of a sanitizer report.
PID_PREFIX = re.compile(r"^==(\d+)==")


def strip_pid(line: str) -> str:
    return PID_PREFIX.sub("", line, count=1) if line.startswith("==") else line


@dataclass(frozen=True)
class Notice:
    """Something the sanitizer said about itself, not about the app: infrastructure, with a remedy."""

    kind: str
    message: str
    remedy: str
    source: str = ""


NOTICES = [
    ("lsan-fatal", re.compile(r"LeakSanitizer has encountered a fatal error"),
     "LeakSanitizer could not stop the process's threads: it cannot run under ptrace (a debugger or strace "
     "attached) or where seccomp forbids ptrace. asanlab adds SYS_PTRACE; detach any debugger."),
    ("no-symbolizer", re.compile(r"invalid path to external symbolizer|External symbolizer path is set to"),
     "no llvm-symbolizer in the image: frames stay module+offset. Images built by asanlab ship it; for "
     "another image set ASAN_SYMBOLIZER_PATH."),
    ("stack-switch", re.compile(r"ignoring requested __asan_handle_no_return"),
     "a coroutine switched stacks (Swoole): ASan may report false stack errors after this; reports that "
     "follow are marked suspect. Build Swoole with --enable-asan (asanlab does) to annotate switches."),
]
DEADLYSIGNAL = "AddressSanitizer:DEADLYSIGNAL"
DEADLYSIGNAL_LOOP = 20


def notices(text: str, source: str = "") -> list[Notice]:
    return scan_notices(text.splitlines(), source)


def scan_notices(lines: Iterable[str], source: str = "") -> list[Notice]:
    """Line by line, so a log of any size is scanned in constant memory."""
    found: dict[str, Notice] = {}
    deadly = 0
    for line in lines:
        if DEADLYSIGNAL in line:
            deadly += 1
        for kind, pattern, remedy in NOTICES:
            if kind not in found and pattern.search(line):
                found[kind] = Notice(kind, strip_pid(line.strip()), remedy, source)
    out = list(found.values())
    if deadly >= DEADLYSIGNAL_LOOP:
        out.append(Notice("deadlysignal-loop", f"{deadly} x {DEADLYSIGNAL}",
                          "ASan crashed while handling a crash, again and again: typically the kernel's mmap "
                          "randomization (vm.mmap_rnd_bits above 28) against an older ASan runtime; lower it with "
                          "`sysctl vm.mmap_rnd_bits=28` or use a newer clang.", source))
    return out
