"""The recording proxy: it listens where the user asked the app to be published and forwards each
connection to the port Docker published, keeping every byte both ways (asanlab/run/traffic.py's
format). The app sees what it saw without it: connections from Docker's own proxy.

It runs an asyncio loop in a thread of its own. Each chunk is written as it passes, so an
interrupted run keeps what was recorded until then.
"""

from __future__ import annotations

import asyncio
import errno
import concurrent.futures
import base64
import json
import socket
import threading
import time
from pathlib import Path

from ..errors import UsageError

CHUNK = 64 * 1024
READY_TIMEOUT = 120.0  # seconds a client's connection waits for the app to listen
# A recording stops keeping bytes past this size (connections are still forwarded, and their
# opening and closing still written): a soak of 100,000 requests writes about 60 MB, an hour of a
# busy server could fill the disk. What was cut is said in the session.
LIMIT_BYTES = 1 << 30
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Recorder:
    """Start with start(), end with stop(). `listen` is (ip, port), `upstream` likewise."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], out: Path, limit: int = LIMIT_BYTES):
        self.listen, self.upstream, self.out, self.limit = listen, upstream, out, limit
        self.connections = 0
        self.bytes_in = 0
        self.written = 0
        self.cut_at: float | None = None  # seconds into the recording when the limit was reached
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._sock: socket.socket | None = None
        self._file = None
        self._t0 = time.monotonic()
        self._tasks: set[asyncio.Task] = set()
        self._ready = False
        # Connections asanlab's proxy itself could not carry (out of descriptors): never the app's doing.
        self.dropped = 0
        self.drop_reason: str | None = None
        self._ready_lock: asyncio.Lock | None = None

    def start(self) -> None:
        # Bound here, in the caller's thread, so that a port in use is an error the caller sees.
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.listen[0], self.listen[1] or 0))
        except OSError as e:
            sock.close()
            raise UsageError(f"cannot listen on {self.listen[0]}:{self.listen[1]} to record traffic: {e.strerror}") from None
        sock.listen(256)
        sock.setblocking(False)
        self.listen = (self.listen[0], sock.getsockname()[1])  # the port chosen when none was given
        self._sock = sock
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.out, "a", buffering=1)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="asanlab-recorder", daemon=True)
        self._thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._loop_error)

        async def serve() -> None:
            self._ready_lock = asyncio.Lock()
            self._server = await asyncio.start_server(self._handle, sock=self._sock)
            ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def _loop_error(self, loop, context: dict) -> None:
        """asyncio's own errors (an accept that failed for want of descriptors, thousands of times
        under load): counted and named once at the end, not a traceback each."""
        self._ran_short(context.get("exception") or OSError(context.get("message", "error")))

    def _ran_short(self, e: BaseException) -> None:
        if self.drop_reason is None:
            self.drop_reason = getattr(e, "strerror", None) or str(e) or type(e).__name__

    def _write(self, event: dict) -> None:
        event["t"] = round(time.monotonic() - self._t0, 6)
        if self.written >= self.limit and ("in" in event or "out" in event):
            if self.cut_at is None:
                self.cut_at = event["t"]
                self._file.write(json.dumps({"t": event["t"], "cut": self.written}) + "\n")
            return
        line = json.dumps(event, separators=(",", ":")) + "\n"
        self.written += len(line)
        self._file.write(line)

    async def _app_ready(self) -> None:
        """Until the app itself accepts connections. Docker's proxy accepts on the published port at
        once and closes each connection while the app is not listening: a client's request would be
        recorded as sent and lost. So a connection is held here until a probe connection stays open
        (the app's), then forwarded: early clients wait instead of failing, and what is recorded is
        what the app received. The app sees one empty connection, the probe."""
        if self._ready:
            return
        async with self._ready_lock:
            deadline = time.monotonic() + READY_TIMEOUT
            while not self._ready and time.monotonic() < deadline:
                try:
                    probe_reader, probe_writer = await asyncio.open_connection(*self.upstream)
                except OSError:
                    await asyncio.sleep(0.2)
                    continue
                try:
                    closed = await asyncio.wait_for(probe_reader.read(1), 0.5) == b""
                except asyncio.TimeoutError:
                    closed = False
                except OSError:
                    closed = True
                probe_writer.close()
                if closed:
                    await asyncio.sleep(0.2)
                else:
                    self._ready = True
            self._ready = True  # past the deadline: forward anyway, as Docker would

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:
            # stop(): ended, not failed. A cancelled handler task makes asyncio log a traceback
            # (Python 3.11's streams check its exception): returning leaves nothing to log.
            writer.close()
        finally:
            self._tasks.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._app_ready()
        self.connections += 1
        cid = self.connections
        peer = writer.get_extra_info("peername")
        self._write({"c": cid, "open": f"{peer[0]}:{peer[1]}" if peer else ""})
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as e:
            if e.errno in OUT_OF_RESOURCES:  # the proxy's own limit, not the app's answer
                self.dropped += 1
                self._ran_short(e)
                self._write({"c": cid, "close": "proxy"})
            else:
                self._write({"c": cid, "close": "app"})  # the app was not listening
            writer.close()
            return
        closed: list[str] = []

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str, who: str) -> None:
            try:
                while True:
                    data = await src.read(CHUNK)
                    if not data:
                        break
                    if direction == "in":
                        self.bytes_in += len(data)
                    self._write({"c": cid, direction: base64.b64encode(data).decode()})
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                if not closed:
                    closed.append(who)
                    self._write({"c": cid, "close": who})
                try:
                    dst.write_eof() if dst.can_write_eof() else dst.close()
                except OSError:
                    pass

        try:
            await asyncio.gather(pump(reader, up_writer, "in", "client"), pump(up_reader, writer, "out", "app"))
        finally:
            for w in (writer, up_writer):
                w.close()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            # Each ends before the loop does: none is left to be collected half-run. Connections
            # accepted just before the server closed start their tasks after a first look.
            deadline = time.monotonic() + 5
            while self._tasks and time.monotonic() < deadline:
                tasks = list(self._tasks)
                for t in tasks:
                    t.cancel()
                await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            pass  # the loop is going away; what was written is kept
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if self._file is not None:
            self._file.close()
        self._loop = None
