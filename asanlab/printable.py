"""Text from the app, its reports and its clients, made safe to show: the app's output and every
sanitizer report are untrusted, and a control character in them would reach the user's terminal
(an escape sequence rewrites the screen or the title, or hides lines) or make an XML report
invalid. Pure."""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, and C1 controls (ESC's 8-bit form among them).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What XML 1.0 cannot hold at all (its Char production), escaped or not.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _shown(m: re.Match) -> str:
    return f"\\x{ord(m.group()):02x}"


def printable(text: str) -> str:
    """text with each control character shown as \\xNN."""
    return CONTROL.sub(_shown, text)


def xml_text(text: str) -> str:
    """text that XML 1.0 can hold: the characters it cannot, shown as \\xNN (and ESC too, so a
    CI page that renders the failure text shows no colours the app chose)."""
    return NOT_XML.sub(_shown, text).replace("\x1b", "\\x1b")
