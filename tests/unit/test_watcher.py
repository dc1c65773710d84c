"""The live watcher of `asanlab run`: each report announced once, as soon as its process has
finished writing it, from logs read a piece at a time (real reports, cut at awkward places)."""

from pathlib import Path

from asanlab.events import Collect
from asanlab.run.watch import Watcher

FIXTURES = Path(__file__).parent.parent / "fixtures"


def body(name: str) -> bytes:
    text = (FIXTURES / "reports" / name).read_text()
    return "".join(l + "\n" for l in text.splitlines() if not l.startswith("#")).encode()


def test_reports_announced_once_as_they_complete(tmp_path):
    log = tmp_path / "sanitizer.7"
    events = Collect()
    w = Watcher(tmp_path, events)
    data = body("double-free.log") + (FIXTURES / "soak" / "worker-profiles.log").read_bytes() + b"\n"
    cut1, cut2 = len(body("double-free.log")) // 2, len(data) - 300
    with open(log, "wb") as f:
        for piece in (data[:cut1], data[cut1:cut2], data[cut2:]):
            f.write(piece)
            f.flush()
            w.scan()
            if piece is data[:cut1]:
                assert events.events == []  # half a report: nothing yet
    kinds = [e.data["kind"] for e in events.events]
    assert kinds == ["double-free", "leak"]  # the profiles in between are not reports
    assert events.events[1].data["records"] == 1
    w.scan()  # nothing new: nothing said again
    assert len(events.events) == 2
    assert w.state["sanitizer.7"].offset == log.stat().st_size
