"""Valgrind memcheck XML (protocol 4) -> the same Report model as the sanitizers. Pure.

`USE_ZEND_ALLOC=0 valgrind --xml=yes --xml-file=F php app.php` is what Swoole's maintainers ask
for in bug reports; reading it here puts those findings beside ASan's.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import Iterator

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

from ..errors import UsageError
from .types import Frame, Report, Tool

KINDS = {
    "InvalidRead": ("invalid-read", "READ"),
    "InvalidWrite": ("invalid-write", "WRITE"),
    "InvalidFree": ("invalid-free", None),
    "MismatchedFree": ("alloc-dealloc-mismatch", None),
    "InvalidJump": ("invalid-jump", None),
    "UninitCondition": ("uninitialized-condition", None),
    "UninitValue": ("uninitialized-value", None),
    "SyscallParam": ("syscall-param", None),
    "Overlap": ("memcpy-param-overlap", None),
    "Leak_DefinitelyLost": ("direct-leak", None),
    "Leak_IndirectlyLost": ("indirect-leak", None),
    "Leak_PossiblyLost": ("possible-leak", None),
    "Leak_StillReachable": ("reachable-leak", None),
}


def is_valgrind_xml(head: str) -> bool:
    """Whether a file's first characters are Valgrind's XML (the one test for it)."""
    return head.lstrip().startswith("<?xml") or "<valgrindoutput>" in head[:2000]


def _frames(stack: ET.Element | None) -> list[Frame]:
    out = []
    for i, fr in enumerate(stack.findall("frame") if stack is not None else []):
        directory, file = fr.findtext("dir"), fr.findtext("file")
        line = fr.findtext("line")
        out.append(Frame(index=i, function=fr.findtext("fn"),
                         file=f"{directory}/{file}" if directory and file and not file.startswith("/") else file,
                         line=int(line) if line and line.isdigit() else None,
                         module=fr.findtext("obj"), offset=fr.findtext("ip")))
    return out


def _error(el: ET.Element, pid: int | None, source: str) -> Report:
    vg_kind = el.findtext("kind") or "unknown"
    kind, access = KINDS.get(vg_kind, (vg_kind.lower(), None))
    what = el.findtext("what") or el.findtext("xwhat/text") or ""
    stacks = el.findall("stack")
    auxwhat = [a.text or "" for a in el.findall("auxwhat")]
    r = Report(tool=Tool.VALGRIND, kind=kind, pid=pid, source=source,
               access=access, message=what, frames=_frames(stacks[0] if stacks else None))
    if kind.endswith("-leak"):
        # Leaks join LeakSanitizer's model (bytes, objects, allocation stack) so they group the same way.
        r.leaked_bytes = int(el.findtext("xwhat/leakedbytes") or 0)
        r.leaked_objects = int(el.findtext("xwhat/leakedblocks") or 0)
        r.allocated_by = r.frames
    size = re.search(r"of size (\d+)", what)
    r.size = int(size.group(1)) if size else None
    # The extra stacks follow "auxwhat" lines: "... free'd" then "Block was alloc'd at".
    for text, stack in zip(auxwhat, stacks[1:]):
        if "free'd" in text:
            r.freed_by = _frames(stack)
        elif "alloc'd" in text:
            r.allocated_by = _frames(stack)
    r.text = ET.tostring(el, encoding="unicode")
    return r


def parse_xml(text: str, source: str = "") -> list[Report]:
    """Every <error> in a memcheck XML text (parse_stream's rules)."""
    return list(parse_stream(io.StringIO(text), source))


def parse_stream(fh, source: str = "") -> Iterator[Report]:
    """Every <error> in a memcheck XML file, streamed: each error's elements are dropped once it is
    read, so memory stays flat on a file of hundreds of megabytes. A file cut short (valgrind
    killed) or malformed keeps what was whole before the fault. Entity and DTD declarations are
    refused (a file from elsewhere could expand without end or name a host file): UsageError."""
    pid: int | None = None
    root = None
    events = DefusedET.iterparse(fh, events=("start", "end"), forbid_dtd=True)
    try:
        for event, el in events:
            if root is None:
                root = el
            if event != "end":
                continue
            if el.tag == "pid" and el.text and el.text.strip().isascii() and el.text.strip().isdigit():
                pid = int(el.text)
            elif el.tag == "error":
                yield _error(el, pid, source)
                root.clear()  # what was read is in the report: free it
    except DefusedXmlException as e:
        raise UsageError(f"{source or 'Valgrind XML'}: refused: it declares a DTD or entities ({type(e).__name__}), "
                         "which Valgrind never writes and asanlab does not expand") from None
    except ET.ParseError:
        return  # malformed or cut here: what came before stands
