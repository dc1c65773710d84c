"""The soak's load: exact numbers of HTTP requests over keep-alive connections (aiohttp).

A Loader keeps its connections between batches, so the soak can pause the load to sample
memory and go on without reconnecting. Errors and non-2xx answers are counted, never raised.
"""

from __future__ import annotations

import asyncio
import json
import threading
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
        t = self.total
        t.sent, t.ok, t.seconds = t.sent + stats.sent, t.ok + stats.ok, t.seconds + stats.seconds
        t.statuses.update(stats.statuses)
        t.errors.update(stats.errors)
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
