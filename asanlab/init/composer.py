"""composer.json's `require` (php, ext-*) as a recipe's keys: the lighter path, when no image is at hand.

Composer states constraints, not versions: PHP becomes the first line asanlab builds that the
constraint admits (8.2 first: Debian's source package builds it anywhere), and Swoole the newest
release asanlab knows that admits it. A PECL extension's release cannot be guessed: it is left as a
comment that says what to add.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import untrusted
from ..errors import UsageError
from ..image.recipe import SWOOLE_PHP_SUPPORT, minor, version_tuple
from .mapping import ALWAYS, ADDED, BUNDLED, PECL, Plan, default_plan, shown

# PHP lines in the order they are offered: Debian's 8.2 first, then php.net's.
PHP_LINES = {"8.2": None, "8.3": "8.3.33", "8.4": "8.4.24"}  # the recipes/ versions
# Swoole releases asanlab has built (newest of each line).
SWOOLE_RELEASES = ("6.2.2", "6.1.9", "5.1.8")
TERM = re.compile(r"^(\^|~|>=|<=|>|<|!=|==|=)?v?(\d+)(?:\.(\d+|\*))?(?:\.(\d+|\*))?(?:[-@].*)?$")


def admits(constraint: str, version: str) -> bool:
    """Whether a Composer constraint (^, ~, ranges, wildcards, ||) admits an exact version X.Y.Z."""
    v = version_tuple(version)
    for alternative in re.split(r"\s*\|\|?\s*", constraint.strip()):
        terms = [t for t in re.split(r"[\s,]+", alternative) if t]
        if terms and all(_term(t, v) for t in terms):
            return True
    return False


def _term(term: str, v: tuple[int, ...]) -> bool:
    if term == "*":
        return True
    m = TERM.match(term)
    if not m:
        raise UsageError(f"composer.json: cannot read the version constraint {shown(term)!r}")
    op, parts = m.group(1) or "", [p for p in m.group(2, 3, 4) if p is not None]
    if "*" in parts:  # 8.* or 8.2.*
        fixed = tuple(int(p) for p in parts[:parts.index("*")])
        return v[:len(fixed)] == fixed
    given = tuple(int(p) for p in parts)
    low = given + (0,) * (3 - len(given))
    if op == "^":
        high = (given[0] + 1, 0, 0) if given[0] else (0, given[1] + 1, 0)
        return low <= v < high
    if op == "~":
        high = (given[0] + 1, 0, 0) if len(given) <= 2 else (given[0], given[1] + 1, 0)
        return low <= v < high
    cmp = {">=": v >= low, ">": v > low, "<=": v <= low, "<": v < low, "!=": v != low}
    if op in cmp:
        return cmp[op]
    return v[:len(given)] == given  # "8.2" or "=8.2.3": that version or its patch releases


def _php_line(constraint: str) -> str | None:
    for line, release in PHP_LINES.items():
        if any(admits(constraint, f"{line}.{patch}") for patch in (0, 99)) or release and admits(constraint, release):
            return line
    return None


def from_composer(path: Path, name: str) -> Plan:
    try:
        data = json.loads(untrusted.read_text(path, limit=untrusted.SMALL_LIMIT))
    except ValueError as e:
        raise UsageError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror or e})") from None
    require = data.get("require") if isinstance(data, dict) else None
    require = require if isinstance(require, dict) else {}
    plan = default_plan(name)
    plan.header = [f"Written by `asanlab init --from-composer {shown(str(path), 120)}`: its require.php and ext-* "
                   "entries."]
    constraint = require.get("php")
    if isinstance(constraint, str):
        line = _php_line(constraint)
        if line is None:
            raise UsageError(f"{path}: require.php {shown(constraint)!r} admits none of the PHP lines asanlab builds "
                             f"({', '.join(PHP_LINES)})")
        if line != "8.2":
            plan.php_version, plan.php_debian = PHP_LINES[line], None
        plan.notes["php"] = [f"require.php {shown(constraint)!r}: PHP {plan.php_version}"
                             + (" (Debian's source package)" if plan.php_debian else " (php.net's release)")]
    plan.php_configure, plan.build_packages = [], []
    plan.swoole_version, plan.swoole_configure = None, []
    plan.notes["swoole"] = ["composer.json requires no ext-swoole: this recipe builds PHP alone."]
    for key in sorted(require):
        if not key.startswith("ext-"):
            continue
        ext, wanted = key[4:].lower(), require[key] if isinstance(require[key], str) else "*"
        if ext in ALWAYS or ext in ADDED:
            continue
        if ext == "swoole":
            _swoole(plan, wanted, path)
        elif ext in BUNDLED:
            plan.configure(*BUNDLED[ext])
        elif ext in PECL:
            plan.left_out.append(f"ext-{shown(ext)} {shown(wanted)}: composer names no release; add "
                                 f"`{{name: {shown(ext)}, version: \"X.Y.Z\"}}` under extensions:")
        else:
            plan.left_out.append(f"ext-{shown(ext)}: an extension asanlab does not know how to build")
    return plan


def _swoole(plan: Plan, wanted: str, path: Path) -> None:
    for release in SWOOLE_RELEASES:
        lo, hi = SWOOLE_PHP_SUPPORT[".".join(release.split(".")[:2])]
        if admits(wanted, release) and version_tuple(lo) <= version_tuple(minor(plan.php_version)) <= version_tuple(hi):
            plan.swoole_version = release
            plan.swoole_configure = ["--enable-sockets"] + (["--enable-openssl"] if version_tuple(release) < (6, 2) else [])
            plan.configure(("--with-openssl",), ("libssl-dev",))
            plan.notes["swoole"] = [f"ext-swoole {shown(wanted)!r}: Swoole {release}, with sockets and OpenSSL."]
            return
    raise UsageError(f"{path}: ext-swoole {shown(wanted)!r} admits none of the Swoole releases asanlab builds with "
                     f"PHP {minor(plan.php_version)} ({', '.join(SWOOLE_RELEASES)})")
