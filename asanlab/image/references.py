"""Docker image references, checked against the grammar Docker accepts (distribution/reference:
`[domain[:port]/]path[:tag][@digest]`), so a bad name is a usage error that names it, not a
daemon error after work was done. Pure."""

from __future__ import annotations

import re

COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{COMPONENT}(?:/{COMPONENT})*)"
                       rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,64}")
MAX_NAME = 255


def problem(ref: str) -> str | None:
    """What is wrong with an image reference (or an image ID), or None."""
    if IMAGE_ID.fullmatch(ref):
        return None
    m = REFERENCE.fullmatch(ref)
    if not m:
        return (f"{ref!r} is not a Docker image reference: lower-case name parts of letters and digits "
                "joined by '.', '_' or '-', an optional registry, :tag and @digest (e.g. asanlab/php8.2:latest)")
    if len(ref.split("@")[0].rsplit(":", 1)[0] if m.group("tag") else ref.split("@")[0]) > MAX_NAME:
        return f"{ref!r}: the name is longer than {MAX_NAME} characters"
    return None
