"""The threads that watch a running app: its sanitizer logs (each report announced as it is
written), its output (copied verbatim, Swoole's abnormal-exit lines noted), and a companion's work."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import untrusted
from ..events import Event, Reporter
from ..reports.crash import abnormal_exit
from ..reports.findings import Category, category
from ..reports.sanitizers import _starts_report, parse
from .options import DriverContext
from .stop import StopRequest

SCAN_BYTES = 16 << 20  # read at most this much of one log per look


class Watcher(threading.Thread):
    """Tells the user about each sanitizer report as soon as its process has written it.

    Reads only what each log gained since the last look, and holds only the report being written:
    a soak's logs grow by live-heap profiles of megabytes, which are not reports and are skipped.
    """

    def __init__(self, folder: Path, reporter: Reporter) -> None:
        super().__init__(daemon=True)
        self.folder, self.reporter = folder, reporter
        self.state: dict[str, LogState] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        warned = False
        while not self.stop.wait(0.3):
            try:
                self.scan()
            except OSError as e:  # out of descriptors, say: the next look tries again; the end reads all
                if not warned:
                    warned = True
                    self.reporter(Event("run.warning", f"the live report watcher could not read {self.folder}: "
                                                       f"{e.strerror or e}; the reports are read at the end"))

    def scan(self) -> None:
        # The app's container writes this folder: links, FIFOs and devices are left alone (a FIFO
        # would block this thread and with it every later announcement), and each look reads a
        # bounded piece (a sparse file of terabytes is read in pieces, not at once).
        for f in untrusted.files(self.folder):
            st = self.state.setdefault(f.name, LogState())
            try:
                with untrusted.open_file(f, under=self.folder, limit=untrusted.LOG_LIMIT) as fh:
                    fh.seek(st.offset)
                    data = fh.read(SCAN_BYTES)
            except (OSError, untrusted.UntrustedFileError):
                continue
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) == SCAN_BYTES:  # no line end in a whole piece: not a sanitizer's log line
                    st.offset += len(data)
                continue
            st.offset += end + 1
            for line in data[:end].decode(errors="replace").split("\n"):
                starts = (line[:2] == "==" or "runtime error: " in line) and _starts_report(line)
                if starts and st.block:
                    self._announce(f.name, st, final=True)
                if starts or st.block:
                    st.block.append(line)
            if st.block:
                self._announce(f.name, st, final=False)

    def _announce(self, name: str, st: "LogState", final: bool) -> None:
        reports = [r for r in parse("\n".join(st.block), name) if r.complete]
        new = reports[st.announced:]
        st.announced = len(reports)
        if final:
            st.block, st.announced = [], 0
        errors = [r for r in new if not r.is_leak]
        for r in errors:
            where = next((fr.describe() for fr in r.frames if fr.function), "")
            self.reporter(Event("run.finding", f"pid {r.pid}: {r.tool}: {r.kind} {where}".rstrip(),
                                {"pid": r.pid, "kind": r.kind, "file": name}))
        leaks = [r for r in new if r.is_leak]
        if leaks:
            runtime = [r for r in leaks if category(r) is Category.LEAK]
            total = sum(r.leaked_bytes or 0 for r in leaks)
            self.reporter(Event("run.finding",
                                f"pid {leaks[0].pid}: LeakSanitizer: {len(leaks)} leak record(s), {total} bytes; "
                                f"{len(runtime)} outside start-up",
                                {"pid": leaks[0].pid, "kind": "leak", "records": len(leaks),
                                 "runtime": len(runtime), "file": name}))


@dataclass
class LogState:
    offset: int = 0  # bytes read, up to the last complete line
    block: list[str] = field(default_factory=list)  # the lines of the report being written
    announced: int = 0  # complete reports of that block already announced


SYMBOLIZER_NOISE = "LLVMSymbolizer: error reading file"
# A line longer than this is written in pieces, between which the other stream's lines may come.
LONG_LINE = 1 << 16


class OutputCopier(threading.Thread):
    """Copies the container's output to raw/output.log and emits it line by line. The stream gives
    stdout's and stderr's chunks apart ((stdout, stderr) pairs, attach's demux), and each stream's
    lines are written whole: the daemon cuts its chunks anywhere, and a line of stderr (a sanitizer's
    or the symbolizer's) must not land inside a line of stdout."""

    def __init__(self, stream, path: Path, reporter: Reporter, on_write_error: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.stream, self.path, self.reporter = stream, path, reporter
        self.on_write_error = on_write_error
        self.abnormal: list[dict] = []
        self.write_error: str | None = None  # why output.log stopped growing (a full disk), once it did
        self.symbolizer_errors = 0

    def run(self) -> None:
        pending = [b"", b""]  # stdout's and stderr's unfinished line
        # Unbuffered: each write succeeds or fails here, not later in a flush at close.
        with open(self.path, "ab", buffering=0) as out:
            try:
                for item in self.stream:
                    for n, chunk in enumerate(item if isinstance(item, tuple) else (item,)):
                        if chunk:
                            pending[n] = self._whole_lines(out, pending[n] + chunk)
            except Exception as e:  # the stream ends with the container; a broken stream loses nothing on disk
                self.reporter(Event("run.warning", f"output stream ended: {e.__class__.__name__}"))
            for rest in pending:
                if rest:
                    self._write(out, rest)
                    self._line(rest.decode(errors="replace"))

    def _write(self, out, data: bytes) -> None:
        """To output.log while it can be written. A write that fails (the disk is full) stops the
        writing, not the reading: the stream is still drained, or the app would block on its
        stdout and the grace would run out before LeakSanitizer wrote anything."""
        if self.write_error is not None:
            return
        try:
            out.write(data)
        except OSError as e:
            self.write_error = f"{self.path}: {e.strerror}"
            self.reporter(Event("run.warning", f"cannot write {self.write_error}: stopping the app gracefully; "
                                               "its output goes on here, and what was written is kept"))
            if self.on_write_error is not None:
                self.on_write_error()

    def _whole_lines(self, out, data: bytes) -> bytes:
        """Writes the complete lines at the start of data (all of it past LONG_LINE); returns the rest."""
        cut = data.rfind(b"\n") + 1
        if len(data) - cut > LONG_LINE:
            cut = len(data)
        if cut:
            self._write(out, data[:cut])
            *lines, piece = data[:cut].split(b"\n")
            for raw in lines + ([piece] if piece else []):
                self._line(raw.decode(errors="replace"))
        return data[cut:]

    def _line(self, line: str) -> None:
        exit = abnormal_exit(line)
        if exit is not None:
            self.abnormal.append(exit)
        if line.startswith(SYMBOLIZER_NOISE):
            # The symbolizer asked about [stack] or a module gone since: kept in output.log, said
            # once at the end (symbolizer_errors), not a line on the terminal each time.
            self.symbolizer_errors += 1
            return
        self.reporter(Event("run.output", line))


class CompanionThread(threading.Thread):
    """Runs a companion's work beside the app (soak's load, reproduce's replay); when it returns (or
    fails) the run stops."""

    def __init__(self, work: Callable[[DriverContext], None], ctx: DriverContext, stop: StopRequest) -> None:
        super().__init__(daemon=True)
        self.work, self.ctx, self.stop = work, ctx, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work(self.ctx)
            self.stop.request("finished")
        except BaseException as e:
            self.error = e
            self.stop.request("error")
