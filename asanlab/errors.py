"""Typed errors. Each carries the exit code the CLI returns for it; only the CLI exits."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
# A bug in asanlab itself (an unexpected exception): never 1, which CI reads as "findings".
EXIT_INTERNAL = 70


class AsanlabError(Exception):
    exit_code = EXIT_INFRA

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(AsanlabError):
    """The command line or an input file is wrong."""

    exit_code = EXIT_USAGE


class RecipeError(UsageError):
    """One or more problems in a recipe, each with file, key path and line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class InfraError(AsanlabError):
    """Docker, the network or a build failed: not the app's fault."""

    exit_code = EXIT_INFRA


class DockerUnavailable(InfraError):
    pass


class SourceError(InfraError):
    """A source could not be fetched, or its checksum does not match."""


class BuildFailed(InfraError):
    def __init__(self, message: str, *, log_path: str | None = None, tail: list[str] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_path = log_path
        self.tail = tail or []


class SessionError(UsageError):
    """A session id that does not exist, or a session folder that cannot be read."""
