"""Source tarballs: where they come from, how they are verified, where they are cached.

A tarball is downloaded on the host (streamed, with progress), hashed while it streams, and
only moved into the cache once its sha256 matches. The expected sha256 comes from, in order:
the recipe, php.net's published release data (shipped in data/php-releases.json), or the lock
file beside the recipe, which pins the first download of anything nobody publishes a checksum for.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import requests

from ..errors import SourceError, UsageError
from ..untrusted import atomic_write
from ..events import Event, Reporter, null_reporter
from .recipe import Recipe, Source

LOCK_SCHEMA = 1
CHUNK = 1 << 16

PHP_RELEASE_URL = "https://www.php.net/distributions/php-{version}.tar.xz"
SWOOLE_RELEASE_URL = "https://github.com/swoole/swoole-src/archive/refs/tags/v{version}.tar.gz"
PECL_RELEASE_URL = "https://pecl.php.net/get/{name}-{version}.tgz"
# Where the release URLs are rewritten to, for users behind a mirror (and for the tests).
MIRROR_ENV = {"php": "ASANLAB_PHP_MIRROR", "swoole": "ASANLAB_SWOOLE_MIRROR", "pecl": "ASANLAB_PECL_MIRROR"}


@dataclass(frozen=True)
class Fetched:
    """A verified tarball in the cache, and the name it takes in the build context."""

    role: str  # "php" or an extension's name
    filename: str
    path: Path
    sha256: str
    origin: str  # the URL or path it came from


def cache_dir() -> Path:
    base = os.environ.get("ASANLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "asanlab")
    return Path(base)


def lock_path(recipe: Recipe) -> Path | None:
    return recipe.path.with_suffix(".lock") if recipe.path else None


def read_lock(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return dict(data["sources"])
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{path}: not an asanlab lock file (delete it to pin sources again)") from None


def write_lock(path: Path, pins: dict[str, str]) -> None:
    body = json.dumps({"schema": LOCK_SCHEMA, "sources": dict(sorted(pins.items()))}, indent=2) + "\n"
    atomic_write(path, body.encode())


def published_php_sha256(version: str, filename: str) -> str | None:
    data = json.loads(resources.files("asanlab").joinpath("data/php-releases.json").read_text())
    return data["releases"].get(version, {}).get(filename)


def _mirror(kind: str, url: str) -> str:
    base = os.environ.get(MIRROR_ENV[kind])
    if not base:
        return url
    return base.rstrip("/") + "/" + url.rsplit("/", 1)[1]


def _archive_suffix(name: str) -> str:
    for suffix in (".tar.xz", ".tar.gz", ".tar.bz2", ".tgz", ".tar"):
        if name.endswith(suffix):
            return suffix
    raise UsageError(f"{name}: not a tarball asanlab can unpack (.tar.xz, .tar.gz, .tar.bz2, .tgz, .tar)")


@dataclass(frozen=True)
class Planned:
    role: str
    filename: str
    url: str | None
    path: Path | None
    expected: str | None  # sha256 we must see; None = not pinned yet
    pinned_by: str  # "recipe", "php.net", "lock", "" (nothing)
    # The lock file's key: the release URL before any mirror rewrote it, so a lock made behind a
    # mirror (or a test's 127.0.0.1 server on some port) holds wherever the recipe is built.
    pin_key: str | None = None


def plan(recipe: Recipe) -> list[Planned]:
    """What must be fetched for this recipe, and what each must hash to. No I/O but the lock."""
    pins = read_lock(lock_path(recipe))
    out: list[Planned] = []
    if recipe.php.source.kind != "debian":
        out.append(_plan_one("php", "php", recipe.php.version, recipe.php.source, pins))
    for ext in recipe.all_extensions:
        out.append(_plan_one(ext.name, "swoole" if ext.name == "swoole" else "pecl", ext.version, ext.source, pins))
    return out


def _plan_one(role: str, kind: str, version: str, source: Source, pins: dict[str, str]) -> Planned:
    if source.kind == "path":
        assert source.path is not None
        filename = f"{role}-{version}{_archive_suffix(source.path.name)}"
        return Planned(role, filename, None, source.path, source.sha256, "recipe" if source.sha256 else "")
    if source.kind == "url":
        assert source.url is not None
        release = url = source.url
    else:
        release = {"php": PHP_RELEASE_URL, "swoole": SWOOLE_RELEASE_URL}.get(kind, PECL_RELEASE_URL).format(
            name=role, version=version)
        url = _mirror(kind, release)
    filename = f"{role}-{version}{_archive_suffix(urlparse(url).path)}"
    if source.sha256:
        return Planned(role, filename, url, None, source.sha256, "recipe", release)
    if kind == "php":
        published = published_php_sha256(version, f"php-{version}{_archive_suffix(urlparse(url).path)}")
        if published:
            return Planned(role, filename, url, None, published, "php.net", release)
    # Older locks keyed a pin by the mirrored URL: still honoured.
    for key in (release, url):
        if key in pins:
            return Planned(role, filename, url, None, pins[key], "lock", release)
    return Planned(role, filename, url, None, None, "", release)


def fetch_all(recipe: Recipe, *, frozen: bool = False, reporter: Reporter = null_reporter,
              session: requests.Session | None = None) -> list[Fetched]:
    planned = plan(recipe)
    if frozen:
        loose = [p for p in planned if p.expected is None]
        if loose:
            names = ", ".join(f"{p.role} ({p.url or p.path})" for p in loose)
            raise UsageError(f"--frozen: not pinned by the recipe, php.net or {lock_path(recipe)}: {names}",
                             hint="run `asanlab build` once without --frozen to pin them, and commit the lock file")
    fetched = [fetch_one(p, reporter=reporter, session=session) for p in planned]
    lock = lock_path(recipe)
    new_pins = {p.pin_key: f.sha256 for p, f in zip(planned, fetched) if p.pin_key and p.pinned_by == ""}
    if lock is not None and new_pins:
        pins = read_lock(lock)
        pins.update(new_pins)
        write_lock(lock, pins)
        reporter(Event("source.pinned", f"pinned {len(new_pins)} source(s) in {lock}", {"lock": str(lock)}))
    return fetched


def fetch_one(p: Planned, *, reporter: Reporter = null_reporter,
              session: requests.Session | None = None) -> Fetched:
    cache = cache_dir() / "sources"
    if p.expected:
        cached = cache / p.expected / p.filename
        if cached.exists():
            reporter(Event("source.cached", f"{p.role}: {p.filename} (cached, sha256 {p.expected[:12]})",
                           {"role": p.role, "path": str(cached)}))
            return Fetched(p.role, p.filename, cached, p.expected, p.url or str(p.path))
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".download-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _copy_local(p, out) if p.path else _download(p, out, reporter, session)
        if p.expected and digest != p.expected:
            raise SourceError(
                f"{p.role}: sha256 mismatch for {p.url or p.path}: expected {p.expected} "
                f"({'pinned by ' + p.pinned_by}), got {digest}; nothing was cached or built",
                hint="a changed upstream archive or a tampered mirror; if the new file is right, "
                     "update the sha256 (or delete its line from the lock file)")
        final = cache / digest / p.filename
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    reporter(Event("source.fetched", f"{p.role}: {p.filename} sha256 {digest[:12]} ({p.pinned_by or 'new pin'})",
                   {"role": p.role, "path": str(final), "sha256": digest}))
    return Fetched(p.role, p.filename, final, digest, p.url or str(p.path))


def _copy_local(p: Planned, out) -> str:
    h = hashlib.sha256()
    assert p.path is not None
    with open(p.path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def _download(p: Planned, out, reporter: Reporter, session: requests.Session | None) -> str:
    assert p.url is not None
    if p.url.startswith("file://"):
        return _copy_local(Planned(p.role, p.filename, None, Path(urlparse(p.url).path), p.expected, p.pinned_by), out)
    http = session or requests.Session()
    h = hashlib.sha256()
    try:
        with http.get(p.url, stream=True, timeout=(10, 60)) as r:
            if r.status_code != 200:
                raise SourceError(f"{p.role}: download of {p.url} failed: HTTP {r.status_code}")
            total = int(r.headers.get("Content-Length") or 0)
            done, last = 0, 0.0
            for chunk in r.iter_content(CHUNK):
                h.update(chunk)
                out.write(chunk)
                done += len(chunk)
                now = time.monotonic()
                if now - last > 0.2:
                    last = now
                    reporter(Event("source.progress", p.filename, {"role": p.role, "done": done, "total": total}))
            reporter(Event("source.progress", p.filename, {"role": p.role, "done": done, "total": total or done}))
    except requests.RequestException as e:
        raise SourceError(f"{p.role}: cannot download {p.url}: {e.__class__.__name__}: {e}",
                          hint=f"point {' / '.join(MIRROR_ENV.values())} or the recipe's source.url at a "
                               "reachable mirror, or use a local source.path") from None
    return h.hexdigest()

