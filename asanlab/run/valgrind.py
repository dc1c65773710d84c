"""`run --valgrind`: every PHP process under Valgrind's memcheck, one XML file per process in the
sanitizer log folder, read by the same parser and findings model as the sanitizers
(asanlab/reports/valgrind.py). Needs an image built with `tools: [valgrind]` (no ASan in it)."""

from __future__ import annotations

from pathlib import Path

from ..layout import CONFIG_DIR, LOG_DIR

SUPPRESSIONS = f"{CONFIG_DIR}/valgrind.supp"
# asanlab's own suppressions, copied into each run's config folder (asanlab/data/valgrind.supp).
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "valgrind.supp"


# Definite and indirect leaks only. A "possibly lost" block is one reached only through a pointer
# into its middle, and PHP keeps such pointers to live data: a HashTable's arData points past the
# hash slots at the start of its block. A clean Swoole server under asanlab's debug image left 80+
# possible-leak records per run, all of them hashes and strings still in use when the worker exited
# (measured with Swoole 6.1.9, PHP 8.2.32); a definite leak has no pointer at all.
LEAK_KINDS = "definite,indirect"


def command(php: list[str]) -> list[str]:
    """php's command line under memcheck. Valgrind follows fork() by itself (Swoole's manager and
    workers) and names each process's XML by its pid (%p); --trace-children follows exec() too."""
    return ["valgrind", "--tool=memcheck", "-q", "--xml=yes", f"--xml-file={LOG_DIR}/valgrind.%p.xml",
            "--leak-check=full", f"--show-leak-kinds={LEAK_KINDS}", f"--errors-for-leak-kinds={LEAK_KINDS}",
            "--trace-children=yes", "--num-callers=40", f"--suppressions={SUPPRESSIONS}", *php]
