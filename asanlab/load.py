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

from .errors import UsageError


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


class Loader:
    """Sends exactly N requests per call of send(), `concurrency` at a time, round-robin over the
    requests given. One event loop and one connection pool for the whole soak."""

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
                    self.probes_answered += 1
                    return None
            except Exception as e:
                return f"{e.__class__.__name__}: {e}"
        return self.loop.run_until_complete(once())

    def close(self) -> None:
        if self.session is not None:
            self.loop.run_until_complete(self.session.close())
        self.loop.close()


AB_NUMBERS = {"complete": r"Complete requests:\s+(\d+)", "failed": r"Failed requests:\s+(\d+)",
              "length": r"Length: (\d+)", "non2xx": r"Non-2xx responses:\s+(\d+)"}


def ab_supports(requests: list[Request]) -> str | None:
    """None when ApacheBench can send these requests, else why not."""
    if len(requests) != 1:
        return "ab sends one request; a file of requests needs the built-in client"
    req = requests[0]
    if req.body is not None and req.method not in ("POST", "PUT"):
        return f"ab sends a body with POST or PUT only, not {req.method}"
    if urlsplit(req.url).scheme != "http":
        return "ab is used for http:// URLs only"
    return None


def parse_ab(output: str) -> LoadStats:
    """ab's summary -> counts. ab calls a response "failed" when its length differs from the first
    one's; a dynamic page does that, so those are counted as answered."""
    found = {k: re.search(p, output) for k, p in AB_NUMBERS.items()}
    if found["complete"] is None:
        raise ValueError("no 'Complete requests' line in ab's output")
    n = {k: int(m.group(1)) if m else 0 for k, m in found.items()}
    stats = LoadStats(sent=n["complete"])
    # With -r one request can fail more than once (a refused connect, then its receive).
    errors = min(n["failed"] - n["length"], n["complete"] - n["non2xx"])
    stats.ok = n["complete"] - n["non2xx"] - errors
    stats.statuses.update({"2xx": stats.ok, "non-2xx": n["non2xx"]})
    if errors:
        stats.errors["ab: failed"] = errors
    return stats


class AbLoader:
    """Loader's contract with ApacheBench (`ab`, Debian's apache2-utils) sending: several times the
    built-in client's rate on two cores (FIELD-NOTES), so that a fast server stays the bottleneck.
    `ab -n` sends exact counts; a batch cut short by a stop is not counted."""

    def __init__(self, request: Request, concurrency: int = 16, timeout: float = 30.0, program: str = "ab") -> None:
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
        cmd = [self.program, "-q", "-k", "-r", "-n", str(count), "-c", str(min(self.concurrency, count)),
               "-s", str(int(self.timeout))]
        content_type = "application/octet-stream"
        for name, value in req.headers:
            if name.lower() == "content-type":
                content_type = value
            else:
                cmd += ["-H", f"{name}: {value}"]
        if self._body is not None:
            cmd += ["-p" if req.method == "POST" else "-u", self._body.name, "-T", content_type]
        elif req.method != "GET":
            cmd += ["-m", req.method]
        return cmd + [req.url]

    def send(self, count: int, stop: threading.Event | None = None) -> LoadStats:
        if count <= 0:
            return LoadStats()
        start = time.monotonic()
        proc = subprocess.Popen(self.command(count), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            if stop is not None and stop.wait(0.05):
                proc.kill()
                proc.communicate()
                return LoadStats(seconds=time.monotonic() - start)
            if stop is None:
                time.sleep(0.05)
        out, err = proc.communicate()
        try:
            stats = parse_ab(out)
        except ValueError:
            # ab gave up (the server refused the connection, say): the batch is counted as failed.
            last = (err.strip().splitlines() or ["no output"])[-1]
            stats = LoadStats(sent=count)
            stats.errors[f"ab: {last}"] = count
        stats.seconds = time.monotonic() - start
        self.total.add(stats)
        return stats

    def probe(self) -> str | None:
        import requests

        req = self.request
        try:
            requests.request(req.method, req.url, headers=dict(req.headers), data=req.body, timeout=5)
        except requests.RequestException as e:
            return f"{e.__class__.__name__}: {e}"
        self.probes_answered += 1
        return None

    def close(self) -> None:
        if self._body is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._body.name)


def ab_unavailable(requests: list[Request]) -> str | None:
    return ab_supports(requests) or (None if shutil.which("ab") else "ab is not installed (Debian: apache2-utils)")


def make_loader(requests: list[Request], concurrency: int, client: str = "auto"):
    """The load generator for `--client auto|builtin|ab`: auto takes ab when it is installed and can
    send these requests."""
    if client == "builtin":
        return Loader(requests, concurrency)
    why_not = ab_unavailable(requests)
    if why_not is None:
        return AbLoader(requests[0], concurrency)
    if client == "ab":
        raise UsageError(f"--client ab: {why_not}")
    return Loader(requests, concurrency)
