"""Files asanlab did not write itself: what the container wrote into its rw mounts (sanitizer logs,
the agent's answers and backtraces, state), and the sessions, bundles and logs a user was handed.

Every host-side read or write of such a path goes through here. The rules:
- no link is followed, at any component below the folder the caller trusts (`under`), so a link
  planted by the app cannot point asanlab (root on the host) at a host file;
- only regular files are read: a FIFO would hang the reader, a device would never end;
- whole reads are bounded; streamed reads take what was there when the file was opened;
- writes create a new file under a random name with O_EXCL and rename it over the target, so a
  link or a file planted under the target's name is replaced, never written through.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import UsageError

KiB, MiB = 1024, 1024 * 1024
# Whole reads: the documents asanlab itself writes are far below these.
JSON_LIMIT = 64 * MiB  # session.json, bundle.json, findings.json, symbols.json
SMALL_LIMIT = 1 * MiB  # one-line answers and marks (the agent's answers, state files)
# A log larger than this (sanitizer log, output.log) was not written by a sanitizer or the app's
# output as asanlab copied it, but made (a sparse file): not read, and said so. A soak's logs,
# live-heap profiles included, stay far below.
LOG_LIMIT = 2 << 30

# Folders nested deeper than this are not walked: the app can make a tree as deep as it likes, and
# each level is a frame and an open folder here.
MAX_DEPTH = 32

# O_NOCTTY: a terminal device opened here never becomes asanlab's controlling terminal.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UntrustedFileError(UsageError):
    """A file that is not what asanlab expects there: a link, a FIFO, a device, too large."""


def _open_fd(path: Path, under: Path | None, flags: int) -> int:
    """An fd for path, opened without following a link at any component below `under` (or at the
    last component only, when `under` is None)."""
    path = Path(path)
    if under is None:
        return os.open(path, flags)
    try:
        rel = path.relative_to(under)
    except ValueError:
        raise UntrustedFileError(f"{path} is not inside {under}") from None
    parts = rel.parts
    if any(p in ("..", "") for p in parts):
        raise UntrustedFileError(f"{path}: a path that leaves {under}")
    dfd = os.open(under, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for p in parts[:-1]:
            nfd = os.open(p, _DIR, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        return os.open(parts[-1] if parts else ".", flags, dir_fd=dfd)
    finally:
        os.close(dfd)


def _refusal(path: Path, e: OSError) -> UntrustedFileError | None:
    if e.errno == errno.ELOOP:
        return UntrustedFileError(f"{path} is a symbolic link: asanlab does not follow links there")
    if e.errno == errno.ENOTDIR:
        return UntrustedFileError(f"{path}: a folder on its path is a link or not a folder")
    return None


def open_file(path: Path, *, under: Path | None = None, limit: int | None = None) -> BinaryIO:
    """A regular file opened for reading in binary. FileNotFoundError when it is not there;
    UntrustedFileError when it is a link, not a regular file, or larger than `limit` bytes."""
    path = Path(path)
    try:
        fd = _open_fd(path, under, _READ)
    except OSError as e:
        refusal = _refusal(path, e)
        if refusal is not None:
            raise refusal from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFileError(f"{path} is not a regular file ({_kind(st.st_mode)}): asanlab reads only regular files there")
        if limit is not None and st.st_size > limit:
            raise UntrustedFileError(f"{path} is {st.st_size:,} bytes, more than the {limit:,} asanlab reads from such a file")
        # O_NONBLOCK only kept a FIFO from blocking the open; a regular file's reads never block.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path, *, under: Path | None = None, limit: int = JSON_LIMIT) -> bytes:
    with open_file(path, under=under, limit=limit) as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew after it was opened
        raise UntrustedFileError(f"{path} is more than the {limit:,} bytes asanlab reads from such a file")
    return data


def read_text(path: Path, *, under: Path | None = None, limit: int = JSON_LIMIT) -> str:
    return read_bytes(path, under=under, limit=limit).decode("utf-8", errors="replace")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISLNK, "a link"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def is_file(path: Path) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    """A folder, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def files(folder: Path, *, prefix: str = "") -> list[Path]:
    """The regular files directly in a folder (not links, FIFOs, sub-folders), by name."""
    if not is_dir(folder):
        return []
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it
                          if e.name.startswith(prefix) and e.is_file(follow_symlinks=False))
    except OSError:
        return []


def refused(folder: Path, *, limit: int) -> list[tuple[Path, str]]:
    """The entries directly in a folder that a reader of its regular files leaves alone, each with
    why: links, FIFOs, devices, sub-folders, and files larger than `limit` bytes."""
    out = []
    if not is_dir(folder):
        return out
    with os.scandir(folder) as it:
        for e in sorted(it, key=lambda e: e.name):
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                out.append((Path(e.path), _kind(st.st_mode)))
            elif st.st_size > limit:
                out.append((Path(e.path), f"{st.st_size:,} bytes, more than the {limit:,} read from such a file"))
    return out


def walk(folder: Path, depth: int = 0) -> list[Path]:
    """The regular files under a folder, by path, down to MAX_DEPTH folders; no link to a file or
    a folder is followed."""
    out: list[Path] = []
    subs: list[Path] = []
    try:
        with os.scandir(folder) as it:
            for e in sorted(it, key=lambda e: e.name):
                if e.is_file(follow_symlinks=False):
                    out.append(Path(e.path))
                elif e.is_dir(follow_symlinks=False) and depth < MAX_DEPTH:
                    subs.append(Path(e.path))
    except OSError:
        return out
    for sub in subs:
        out += walk(sub, depth + 1)
    return out


def texts(folder: Path, *, prefix: str = "", limit: int) -> list[tuple[Path, str]]:
    """Each regular file directly in a folder whose name starts with prefix, with the text of its
    first `limit` bytes (a file that grew without end is cut, not refused); links, FIFOs and
    other non-regular files are left out."""
    out = []
    for f in files(folder, prefix=prefix):
        try:
            with open_file(f, under=f.parent) as fh:
                out.append((f, fh.read(limit).decode("utf-8", errors="replace")))
        except (OSError, UntrustedFileError):
            continue  # swapped for a link or a FIFO since it was listed
    return out


def tree(folder: Path, *, limit: int, left_out: list[tuple[str, str]] | None = None) -> Iterator[tuple[str, bytes]]:
    """Every regular file under a folder, with its path relative to it and its bytes, one at a
    time; links and other non-regular files are left out, at every depth, and so is a file that
    would take the total past `limit` bytes. What was left out, with why, is added to `left_out`."""
    total = 0
    left_out = left_out if left_out is not None else []

    def walk(dfd: int, rel: str) -> Iterator[tuple[str, bytes]]:
        nonlocal total
        for name in sorted(os.listdir(dfd)):
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
                left_out.append((f"{rel}{name}", _kind(st.st_mode)))
            elif stat.S_ISREG(st.st_mode) and total + st.st_size > limit:
                left_out.append((f"{rel}{name}", f"{st.st_size:,} bytes, past the {limit:,} taken in all"))
            elif stat.S_ISDIR(st.st_mode) and rel.count("/") >= MAX_DEPTH:
                left_out.append((f"{rel}{name}", f"a folder deeper than {MAX_DEPTH}"))
            elif stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, _DIR, dir_fd=dfd)
                except OSError:
                    continue  # swapped for a link since: left out
                try:
                    yield from walk(sub, f"{rel}{name}/")
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                try:
                    fd = os.open(name, _READ, dir_fd=dfd)
                except OSError:
                    continue
                with os.fdopen(fd, "rb") as f:
                    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                        continue
                    data = f.read(limit - total + 1)
                if total + len(data) > limit:  # it grew since
                    left_out.append((f"{rel}{name}", f"more than the {limit:,} bytes taken in all"))
                    continue
                total += len(data)
                yield f"{rel}{name}", data

    if not is_dir(folder):
        return
    top = os.open(folder, _DIR)
    try:
        yield from walk(top, "")
    finally:
        os.close(top)


def remove(path: Path) -> None:
    """Whatever is at path gone: a link or a file unlinked (never followed), a folder removed with
    what it holds (shutil.rmtree follows no link inside)."""
    if is_dir(path):
        shutil.rmtree(path)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def atomic_write(path: Path, data: bytes) -> None:
    """Write path whole or not at all: a new file under a random name (mkstemp: O_EXCL, no link
    followed), then renamed over the target, which replaces a link of that name instead of
    following it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
