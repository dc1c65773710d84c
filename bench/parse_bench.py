"""Parser benchmark (run with `make bench-parse`; SIZE_MB=1024 by default).

Writes a log of SIZE_MB from the real fixtures in tests/fixtures/reports (every kind, many PIDs,
app output between reports), then in one run measures:
- the raw read speed of that file (baseline, MB/s);
- streamed parsing and grouping into findings (MB/s, and the ratio to the raw read);
- the parser's peak memory (max RSS of the parsing process). Targets: >= 50 MB/s, < 200 MB.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "reports"


def make_log(path: Path, size_mb: int) -> None:
    bodies = []
    for p in sorted(FIXTURES.glob("*.log")):
        text = p.read_text()
        bodies.append("".join(l for l in text.splitlines(keepends=True) if not l.startswith("# ")))
    noise = "[2026-11-26 10:00:00 #1.0]\tINFO\tapp output line that is not a report\n" * 20
    target = size_mb << 20
    written, pid = 0, 100
    with open(path, "w") as out:
        while written < target:
            for body in bodies:
                chunk = noise + body.replace("==1==", f"=={pid}==")
                out.write(chunk)
                written += len(chunk)
                pid += 1


def measure(path: Path) -> None:
    """Runs in a child process so that its max RSS is the parser's alone."""
    sys.path.insert(0, str(REPO))
    from asanlab.reports.findings import group
    from asanlab.session import read_file

    size = path.stat().st_size / (1 << 20)
    start = time.monotonic()
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    raw = size / (time.monotonic() - start)
    start = time.monotonic()
    findings = group(read_file(path, path.name))
    parsed = size / (time.monotonic() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"file      {size:8.0f} MB, {sum(f.count for f in findings)} reports, {len(findings)} findings")
    print(f"baseline  raw read          {raw:8.1f} MB/s   1.00x")
    print(f"parse     stream + group    {parsed:8.1f} MB/s   {parsed / raw:.3f}x of raw  (target >= 50 MB/s)")
    print(f"memory    peak RSS          {rss:8.1f} MB                  (target < 200 MB)")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        measure(Path(sys.argv[2]))
        return 0
    size_mb = int(os.environ.get("SIZE_MB", "1024"))
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "mixed.log"
        make_log(log, size_mb)
        return subprocess.run([sys.executable, __file__, "--measure", str(log)]).returncode


if __name__ == "__main__":
    sys.exit(main())
