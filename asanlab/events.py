"""Progress events. Core code emits them to a reporter it is given; the CLI renders them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    kind: str  # e.g. "download.progress", "build.step", "run.output", "run.finding"
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


Reporter = Callable[[Event], None]


def null_reporter(event: Event) -> None:
    """Drop events: the default for library callers and tests that do not watch progress."""


class Collect:
    """A reporter that keeps every event, for tests."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]
