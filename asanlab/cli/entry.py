"""main(), the entry point: the one place that turns errors into exit codes and messages."""

from __future__ import annotations

import os
import sys

import typer

from ..docker_client import docker_errors
from ..errors import EXIT_INTERNAL, EXIT_USAGE, AsanlabError, BuildFailed
from .common import command, err


def main() -> None:
    try:
        with docker_errors("docker"):  # at the boundary: the daemon or its connection failing is exit 3, not a bug
            code = command()(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except AsanlabError as e:
        err.print(f"asanlab: error: {e.message}", markup=False)
        if isinstance(e, BuildFailed):
            for line in e.tail[-20:]:
                err.print(f"  | {line}", markup=False)
            if e.log_path:
                err.print(f"full build log: {e.log_path}", markup=False)
        if e.hint:
            err.print(f"hint: {e.hint}", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("asanlab: interrupted")
        sys.exit(130)
    except Exception as e:
        # Command-line usage errors (unknown option, missing argument) arrive here in non-standalone
        # mode, as click exceptions; typer may carry its own copy of click, so match by behaviour.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(EXIT_USAGE)
        where = _write_traceback()
        err.print(f"asanlab: internal error: {type(e).__name__}: {str(e)[:300]} (a bug in asanlab; "
                  f"the traceback is in {where})", markup=False)
        sys.exit(EXIT_INTERNAL)


def _write_traceback() -> str:
    """The full traceback of an internal error, kept for the bug report: in asanlab's folder
    (.asanlab/crashes), else stderr."""
    import time
    import traceback

    from ..state import state_dir

    text = traceback.format_exc()
    try:
        folder = state_dir() / "crashes"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        path.write_text(text)
        return str(path)
    except OSError:
        sys.stderr.write(text)
        return "the output above"
