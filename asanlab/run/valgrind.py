"""`run --valgrind`: every PHP process under Valgrind's memcheck, one XML file per process in the
sanitizer log folder, read by the same parser and findings model as the sanitizers
(asanlab/reports/valgrind.py). Needs an image built with `tools: [valgrind]` (no ASan in it)."""

from __future__ import annotations

from pathlib import Path

from ..layout import CONFIG_DIR, LOG_DIR

SUPPRESSIONS = f"{CONFIG_DIR}/valgrind.supp"
# asanlab's own suppressions, copied into each run's config folder (asanlab/data/valgrind.supp).
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "valgrind.supp"


def command(php: list[str]) -> list[str]:
    """php's command line under memcheck. Valgrind follows fork() by itself (Swoole's manager and
    workers) and names each process's XML by its pid (%p); --trace-children follows exec() too."""
    return ["valgrind", "--tool=memcheck", "-q", "--xml=yes", f"--xml-file={LOG_DIR}/valgrind.%p.xml",
            "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible", "--trace-children=yes", "--num-callers=40",
            f"--suppressions={SUPPRESSIONS}", *php]
