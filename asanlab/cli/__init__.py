"""The command line: thin commands over the core. The one place that prints and exits.

The package only gathers: importing each command module registers its commands on the one app,
in the order --help lists them (demo last)."""

from . import initializing, images, running, soaking, sessions, reproducing, demo  # noqa: F401  (registration)
from .common import app
from .entry import main

__all__ = ["app", "main"]
