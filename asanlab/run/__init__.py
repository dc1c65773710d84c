"""`asanlab run`: the app in an instrumented container (lifecycle.py), its environment
(environment.py), the threads that watch it (watch.py), how it stops (stop.py), what it recorded
(recording.py) and its session's end (session_end.py). What other commands use is named here."""

from .environment import SIGTERM_PREPEND, environment
from .lifecycle import run
from .options import Companion, DriverContext, RunOptions, RunResult, parse_env, parse_ports
from .stop import recover_orphans

__all__ = ["SIGTERM_PREPEND", "Companion", "DriverContext", "RunOptions", "RunResult", "environment",
           "parse_env", "parse_ports", "recover_orphans", "run"]
