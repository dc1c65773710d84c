"""Rendering progress events for a person: a live line on a terminal, plain lines elsewhere (CI)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape

from .events import Event
from .printable import printable


class SafeConsole(Console):
    """A Console whose text arguments have their control characters shown as \\xNN: what asanlab
    prints comes largely from the app and its reports (untrusted)."""

    def print(self, *objects, **kwargs) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)


class ConsoleReporter:
    def __init__(self, console: Console, *, quiet_output: bool = False) -> None:
        self.console = console
        self.quiet_output = quiet_output
        self.live = console.is_terminal
        self.status = None
        self.step = ""
        self.last_plain = 0.0

    def __call__(self, e: Event) -> None:
        k = e.kind
        if k == "source.progress":
            done, total = e.data["done"], e.data["total"]
            pct = f"{100 * done / total:.0f}%" if total else f"{done >> 20} MiB"
            self._transient(f"downloading {e.message}: {pct} ({done >> 20} MiB)")
        elif k in ("push.progress", "pull.progress"):
            done, total = e.data["done"], e.data["total"]
            self._transient(f"{e.message}: {done >> 20}/{total >> 20} MiB in {e.data['layers']} layer(s)")
        elif k in ("push.status", "pull.status"):
            self._transient(f"{e.message}")
        elif k in ("build.step",):
            self.step = f"step {e.data['step']}/{e.data['total']}"
            self._clear()
            self.console.print(f"[bold]{self.step}[/] [dim]{_mmss(e.data['elapsed'])}[/] {escape(e.message[:150])}",
                               highlight=False)
        elif k == "build.line":
            self._transient(f"{self.step} {_mmss(e.data['elapsed'])} {e.message[:100]}", plain_every=30.0)
        elif k == "run.output":
            if not self.quiet_output:
                self._clear()
                self.console.print(escape(e.message), highlight=False, markup=True)
        elif k == "run.finding":
            self._clear()
            self.console.print(f"[bold red]asanlab:[/] {escape(e.message)}", highlight=False)
        elif k in ("run.warning", "soak.warning", "build.warning"):
            self._clear()
            self.console.print(f"[yellow]asanlab: {escape(e.message)}[/]", highlight=False)
        elif k == "check.binary":
            pass
        else:
            self._clear()
            if e.message:
                self.console.print(f"[cyan]asanlab:[/] {escape(e.message)}", highlight=False)

    def _transient(self, text: str, plain_every: float = 5.0) -> None:
        if self.live:
            if self.status is None:
                self.status = self.console.status(escape(text))
                self.status.start()
            else:
                self.status.update(escape(text))
        elif time.monotonic() - self.last_plain > plain_every:
            # No terminal (CI): a line now and then shows the build is alive without flooding the log.
            self.last_plain = time.monotonic()
            self.console.print(escape(text), highlight=False)

    def _clear(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def close(self) -> None:
        self._clear()


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"
