"""Where asanlab keeps its state: sessions and build logs, in .asanlab/ of the current folder."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ.get("ASANLAB_HOME") or ".asanlab").absolute()
