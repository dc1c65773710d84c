"""The soak's load: exact numbers of HTTP requests over keep-alive connections (aiohttp).

A Loader keeps its connections between batches, so the soak can pause the load to sample
memory and go on without reconnecting. Errors and non-2xx answers are counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from ..errors import UsageError


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0  # 2xx
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # exception class -> count
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    def add(self, other: "LoadStats") -> None:
        self.sent, self.ok, self.seconds = self.sent + other.sent, self.ok + other.ok, self.seconds + other.seconds
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "ok": self.ok, "failed": self.failed, "seconds": round(self.seconds, 3),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "errors": dict(self.errors)}


def parse_header(spec: str) -> tuple[str, str]:
    name, colon, value = spec.partition(":")
    if not colon or not name.strip() or any(c in name for c in " \t\r\n"):
        raise UsageError(f"--header {spec!r}: expected 'Name: value'")
    if "\n" in value or "\r" in value:
        raise UsageError(f"--header {spec!r}: a header value cannot hold a line break")
    return name.strip(), value.strip()


def check_url(url: str, what: str = "--url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what} {url!r}: expected http://HOST:PORT/PATH")
    return url


def requests_from_file(path: Path, base: str) -> list[Request]:
    """A file of requests: one JSON object per line, {"method", "url" (absolute or relative to --url),
    "headers" (object), "body" (string)}; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise ValueError("not an object")
            unknown = set(item) - {"method", "url", "headers", "body"}
            if unknown:
                raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
            headers = item.get("headers") or {}
            if not isinstance(headers, dict):
                raise ValueError("headers must be an object")
            body = item.get("body")
            if body is not None and not isinstance(body, str):
                raise ValueError("body must be a string")
            out.append(Request(str(item.get("method", "GET")).upper(),
                               check_url(urljoin(base, str(item.get("url", ""))), "url"),
                               tuple((str(k), str(v)) for k, v in headers.items()),
                               body.encode() if body is not None else None))
        except (ValueError, UsageError) as e:
            raise UsageError(f"{path}:{n}: {e}") from None
    if not out:
        raise UsageError(f"{path}: no requests in the file")
    return out


def requests_for(base: str, *, method: str = "GET", headers: list[str] = (), body: str | None = None,
                 body_file: Path | None = None, requests_file: Path | None = None) -> list[Request]:
    """The requests a soak cycles through, from its options: a requests file, or one request made of
    --method, --header and --body (or --body-file)."""
    if body is not None and body_file is not None:
        raise UsageError("give --body or --body-file, not both")
    for option, path in (("--body-file", body_file), ("--requests-file", requests_file)):
        if path is not None and path.exists() and not path.is_file():
            raise UsageError(f"{option} {path}: not a regular file")  # a FIFO or a device: read without end
    if body_file is not None:
        try:
            data = body_file.read_bytes()
        except OSError as e:
            raise UsageError(f"--body-file {body_file}: {e.strerror}") from None
    else:
        data = body.encode() if body is not None else None
    if requests_file is not None:
        return requests_from_file(requests_file, base)
    return [Request(method.upper(), base, tuple(parse_header(h) for h in headers), data)]


class _Probed:
    """A probe the app answered was served like any request: it is part of the load's totals."""

    total: LoadStats
    probes_answered: int

    def _answered_probe(self, status: int, key) -> None:
        self.probes_answered += 1
        self.total.add(LoadStats(sent=1, ok=int(200 <= status < 300), statuses=Counter({key: 1})))


class Loader(_Probed):
    """Sends exactly N requests per call of send(), `concurrency` at a time, round-robin over the
    requests given. One event loop and one connection pool for the whole soak."""

    name = "builtin"

    def __init__(self, requests: list[Request], concurrency: int = 16, timeout: float = 30.0) -> None:
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        self.requests, self.concurrency, self.timeout = requests, concurrency, timeout
        self.loop = asyncio.new_event_loop()
        self.session = None
        self.total = LoadStats()
        self.probes_answered = 0  # requests the app served before the load: part of its count
        self._next = 0

    async def _open(self):
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency, force_close=False),
                timeout=aiohttp.ClientTimeout(total=self.timeout), auto_decompress=False)
        return self.session

    async def _send(self, count: int, stop: threading.Event | None, stats: LoadStats) -> None:
        session = await self._open()
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and not (stop is not None and stop.is_set()):
                remaining -= 1
                req = self.requests[self._next % len(self.requests)]
                self._next += 1
                stats.sent += 1
                try:
                    async with session.request(req.method, req.url, headers=list(req.headers), data=req.body) as resp:
                        await resp.read()
                        stats.statuses[resp.status] += 1
                        if 200 <= resp.status < 300:
                            stats.ok += 1
                except Exception as e:  # a refused or reset connection is a result to count
                    stats.errors[e.__class__.__name__] += 1

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, count))))

    def send(self, count: int, stop: threading.Event | None = None) -> LoadStats:
        stats = LoadStats()
        start = self.loop.time()
        self.loop.run_until_complete(self._send(count, stop, stats))
        stats.seconds = self.loop.time() - start
        self.total.add(stats)
        return stats

    def probe(self) -> str | None:
        """One request to the first URL: None when the server answered (any status), else why not."""
        async def once() -> str | None:
            session = await self._open()
            req = self.requests[0]
            try:
                async with session.request(req.method, req.url, headers=list(req.headers), data=req.body) as resp:
                    await resp.read()
                    self._answered_probe(resp.status, resp.status)
                    return None
            except Exception as e:
                return f"{e.__class__.__name__}: {e}"
        return self.loop.run_until_complete(once())

    def close(self) -> None:
        if self.session is not None:
            self.loop.run_until_complete(self.session.close())
        self.loop.close()


H2LOAD_REQUESTS = re.compile(r"requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, "
                             r"(?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, (?P<errored>\d+) errored, "
                             r"(?P<timeout>\d+) timeout")
H2LOAD_STATUSES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def parse_h2load(output: str) -> LoadStats:
    """h2load's summary -> counts: every request it was asked to send is counted as sent, the 2xx
    answers as ok, the rest as failed (non-2xx statuses, connection errors, timeouts)."""
    m, codes = H2LOAD_REQUESTS.search(output), H2LOAD_STATUSES.search(output)
    if m is None or codes is None:
        raise ValueError("no 'requests:' and 'status codes:' lines in h2load's output")
    stats = LoadStats(sent=int(m.group("total")), ok=int(codes.group(1)))
    for name, count in zip(("2xx", "3xx", "4xx", "5xx"), codes.groups()):
        if int(count):
            stats.statuses[name] = int(count)
    for kind in ("errored", "timeout"):
        if int(m.group(kind)):
            stats.errors[f"h2load: {kind}"] = int(m.group(kind))
    not_sent = int(m.group("total")) - int(m.group("started"))
    if not_sent and not stats.errors:
        stats.errors["h2load: not started"] = not_sent
    return stats


class H2loadLoader(_Probed):
    """Loader's contract with h2load (Debian's nghttp2-client) sending, over HTTP/1.1 keep-alive: a C
    client several times faster than the built-in one, so that a fast server stays the bottleneck.
    `h2load -n` sends exact counts; a batch cut short by a stop is not counted."""

    name = "h2load"

    def __init__(self, request: Request, concurrency: int = 16, timeout: float = 30.0,
                 program: str = "h2load") -> None:
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        self.request, self.concurrency, self.timeout, self.program = request, concurrency, timeout, program
        self.total = LoadStats()
        self.probes_answered = 0
        self._body = None
        if request.body is not None:
            self._body = tempfile.NamedTemporaryFile(prefix="asanlab-body-", delete=False)
            self._body.write(request.body)
            self._body.close()

    def command(self, count: int) -> list[str]:
        req = self.request
        cmd = [self.program, "--h1", "-n", str(count), "-c", str(min(self.concurrency, count)),
               "-N", f"{int(self.timeout)}s"]
        for name, value in req.headers:
            cmd += ["-H", f"{name}: {value}"]
        if self._body is not None:
            cmd += ["-d", self._body.name]
        if req.method != ("POST" if self._body is not None else "GET"):
            cmd += ["-H", f":method: {req.method}"]
        return cmd + [req.url]

    def send(self, count: int, stop: threading.Event | None = None) -> LoadStats:
        if count <= 0:
            return LoadStats()
        start = time.monotonic()
        stop = stop or threading.Event()
        proc = subprocess.Popen(self.command(count), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            if stop.wait(0.05):
                proc.kill()
                proc.communicate()
                return LoadStats(seconds=time.monotonic() - start)
        out, err = proc.communicate()
        try:
            stats = parse_h2load(out)
        except ValueError:
            last = ((err or out).strip().splitlines() or ["no output"])[-1]
            stats = LoadStats(sent=count)
            stats.errors[f"h2load: {last}"] = count
        stats.seconds = time.monotonic() - start
        self.total.add(stats)
        return stats

    def probe(self) -> str | None:
        import requests

        req = self.request
        try:
            resp = requests.request(req.method, req.url, headers=dict(req.headers), data=req.body, timeout=5)
        except requests.RequestException as e:
            return f"{e.__class__.__name__}: {e}"
        self._answered_probe(resp.status_code, f"{resp.status_code // 100}xx")
        return None

    def close(self) -> None:
        if self._body is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._body.name)


def h2load_unavailable(requests: list[Request]) -> str | None:
    """None when h2load can send these requests, else why not."""
    if len(requests) != 1:
        return "h2load is given one request here; a file of requests needs the built-in client"
    if urlsplit(requests[0].url).scheme != "http":
        return "h2load is used for http:// URLs only"
    return None if shutil.which("h2load") else "h2load is not installed (Debian: nghttp2-client)"


def make_loader(requests: list[Request], concurrency: int, client: str = "auto"):
    """The load generator for `--client auto|builtin|h2load`: auto takes h2load when it is installed
    and can send these requests."""
    if client == "builtin":
        return Loader(requests, concurrency)
    why_not = h2load_unavailable(requests)
    if why_not is None:
        return H2loadLoader(requests[0], concurrency)
    if client == "h2load":
        raise UsageError(f"--client h2load: {why_not}")
    return Loader(requests, concurrency)
