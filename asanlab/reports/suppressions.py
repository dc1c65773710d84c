"""LeakSanitizer suppression files: read (with clear errors), passed to the app's LSan at run
time, and applied again by replay and report to findings already recorded. Pure.

Matching follows LeakSanitizer's own: a `leak:PATTERN` rule hides a leak when PATTERN matches the
function name, the source file or the module of any frame of its allocation stack; `*` matches any
run of characters, a leading `^` and a trailing `$` anchor the match, otherwise it may match anywhere.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..errors import UsageError
from .findings import Finding



def read(paths: list[Path]) -> list[str]:
    rules: list[str] = []
    for path in paths:
        if path.exists() and not path.is_file():  # a FIFO or a device would be read without end
            raise UsageError(f"--suppressions {path}: not a regular file")
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise UsageError(f"--suppressions {path}: {e.strerror}") from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            why = problem(line)
            if why:
                raise UsageError(f"{path}:{n}: {why}")
            rules.append(f"leak:{line.partition(':')[2].strip()}")
    return rules


def problem(line: str) -> str | None:
    """What is wrong with one suppression line, or None. LeakSanitizer stops reading at a line it
    cannot parse, and then detects nothing: every line is checked before a run."""
    kind, colon, pattern = line.strip().partition(":")
    if kind != "leak" or not colon or not pattern.strip():
        return f"{line.strip()!r}: expected leak:PATTERN (LeakSanitizer suppressions only)"
    return None


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern:
    start = pattern.startswith("^")
    end = pattern.endswith("$") and len(pattern) > 1
    body = pattern[1 if start else 0:len(pattern) - 1 if end else len(pattern)]
    rx = ".*".join(re.escape(part) for part in body.split("*"))
    return re.compile(("^" if start else "") + rx + ("$" if end else ""))


def matches(rule: str, finding: Finding) -> bool:
    ex = finding.example
    if ex is None or not ex.is_leak:
        return False
    rx = _regex(rule.partition(":")[2])
    for f in ex.allocated_by or ex.frames:
        for name in (f.function, f.file, f.module):
            if name and rx.search(name):
                return True
    return False


def apply(findings: list[Finding], rules: list[str]) -> tuple[list[Finding], list[Finding]]:
    """(kept, suppressed)."""
    kept, hidden = [], []
    for f in findings:
        (hidden if any(matches(r, f) for r in rules) else kept).append(f)
    return kept, hidden
