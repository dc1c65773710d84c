"""What a production image says about its PHP: parsed from the probe's output. Pure: no Docker.

The probe prints sections, each opened by a line `@@NAME` (see probe.SCRIPT). Everything in them
came from the image, so it is treated as text to parse, never as something to run or trust.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import UsageError
from ..layout import IMAGE_PHP_SOURCE

SECTION = re.compile(r"^@@([a-z]+)(?: (.*))?$")
# `php --ri swoole` rows: "name => value".
ROW = re.compile(r"^\s*([A-Za-z0-9_ .-]+?)\s+=>\s+(.*?)\s*$")


@dataclass(frozen=True)
class ImageFacts:
    os_id: str  # "debian", "alpine", "" when unknown
    os_codename: str  # "bookworm"
    php_version: str  # "8.2.29"
    zts: bool
    debug: bool
    extensions: dict[str, str]  # name (lower case) -> version ("" when it says none)
    zend_extensions: dict[str, str]
    configure: str  # PHP's configure line as `php -i` gives it
    debian_php: str | None  # "php8.2" when PHP is Debian's own package
    debian_php_version: str | None  # that package's version, e.g. "8.2.29-1~deb12u1"
    swoole: dict[str, str] = field(default_factory=dict)  # `php --ri swoole` rows, lower-case keys
    # "php8.2" when the image is asanlab's and its PHP was built from that Debian source package
    # (its label org.asanlab.php-source): rebuilt the same way, it shares the image's build stages.
    asanlab_php_debian: str | None = None


def sections(text: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """{section: lines} and {section: the value on its @@ line} (the exit status of a step)."""
    out: dict[str, list[str]] = {}
    status: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = SECTION.match(line)
        if m:
            current = m.group(1)
            out.setdefault(current, [])
            if m.group(2) is not None:
                status[current] = m.group(2)
            continue
        if current is not None:
            out[current].append(line)
    return out, status


def os_release(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_]+", key):
            out[key] = value.strip().strip('"')
    return out


def parse(text: str, image: str, labels: dict[str, str] | None = None) -> ImageFacts:
    """The facts, or a UsageError naming what the image lacks (no PHP, a PHP that fails). labels:
    the image's, for what asanlab wrote there when it built it."""
    found, status = sections(text)
    if "end" not in found:
        raise UsageError(f"image {image}: the probe did not finish (no shell, or it was stopped)",
                         hint="asanlab init runs `sh` in the image once; an image without a shell cannot be read")
    if not any(line.strip() for line in found.get("php", [])):
        raise UsageError(f"image {image} has no `php` on its PATH: nothing to reproduce")
    raw = "\n".join(found.get("facts", [])).strip()
    try:
        data = json.loads(raw[raw.index("{"):]) if "{" in raw else None
    except ValueError:
        data = None
    if status.get("facts", "0") != "0" or not isinstance(data, dict):
        tail = " | ".join(line for line in found.get("facts", [])[-3:] if line.strip())[:300]
        raise UsageError(f"image {image}: `php` fails (exit status {status.get('facts', '?')}): {tail or 'no output'}")
    osr = os_release(found.get("os", []))
    packages = dict(line.split(" ", 1) for line in found.get("dpkg", []) if line.count(" ") == 1)
    debian_php = next((p[:-len("-cli")] for p in packages if re.fullmatch(r"php\d+\.\d+-cli", p)), None)
    swoole = {}
    for line in found.get("swoole", []):
        if line.startswith("Directive =>"):
            break  # its ini settings follow: not features
        m = ROW.match(line)
        if m:
            swoole.setdefault(m.group(1).strip().lower(), m.group(2))
    if "version" not in swoole:
        swoole = {}  # `php --ri swoole` said "Extension 'swoole' not present"
    return ImageFacts(
        os_id=osr.get("ID", ""), os_codename=osr.get("VERSION_CODENAME", ""),
        php_version=str(data.get("version", "")), zts=bool(data.get("zts")), debug=bool(data.get("debug")),
        extensions=_names(data.get("extensions")), zend_extensions=_names(data.get("zend_extensions")),
        configure=str(data.get("configure") or ""), debian_php=debian_php,
        debian_php_version=packages.get(f"{debian_php}-cli") if debian_php else None, swoole=swoole,
        asanlab_php_debian=_asanlab_php_debian(labels or {}))


def _asanlab_php_debian(labels: dict[str, str]) -> str | None:
    """The Debian source package an asanlab image's PHP came from (its label), when well formed."""
    m = re.fullmatch(r"debian:(php\d+\.\d+)", str(labels.get(IMAGE_PHP_SOURCE) or ""))
    return m.group(1) if m else None


def _names(value) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k).lower(): (v if isinstance(v, str) else "") for k, v in value.items()}
