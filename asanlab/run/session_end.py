"""A run's session closed: its reports read once more, counts and findings saved."""

from __future__ import annotations

from .. import session as sessions
from ..reports import php_stack
from ..reports.findings import Finding, failing


def close_session(s: sessions.Session, *, status: str, stop_reason: str, exit_code: int | None, error: str | None,
                  abnormal: list[dict]) -> list[Finding]:
    """The session's end: its reports read once more, counts and findings saved."""
    # A process that died by a signal and left no report is a finding: read with the reports.
    s.data.update({"abnormal_exits": abnormal, "stop_reason": stop_reason, "exit_code": exit_code})
    reports, findings = sessions.reports_and_findings(s)
    s.data.update({
        "status": status, "ended": sessions.now(),
        "error": error, "processes": _processes(reports),
        "counts": {"reports": len(reports), "findings": len(findings), "failing": len(failing(findings))},
    })
    kept = php_stack.origin_bookkeeping(s.path / sessions.PHP_STACK_SUBDIR)
    if kept:
        s.data["php_origins"] = origins_cost(kept)
    try:
        s.save()
        s.save_findings(findings)
    except OSError as e:  # a full or read-only disk: the findings are still given, and why they were not kept
        s.unsaved = f"{e.filename or s.path}: {e.strerror}"
    return findings


def _processes(reports) -> list[dict]:
    by_pid: dict[int, dict] = {}
    for r in reports:
        if r.pid is None:
            continue
        p = by_pid.setdefault(r.pid, {"pid": r.pid, "reports": 0, "log": r.source})
        p["reports"] += 1
    return [by_pid[k] for k in sorted(by_pid)]


def origins_cost(kept: list[dict]) -> dict:
    """What naming each leak's PHP line cost in memory: the largest share of a process's live heap
    that the agent's origin table took, and that process's figures."""
    measured = [k for k in kept if k["share"] is not None]
    worst = max(measured, key=lambda k: k["share"]) if measured else max(kept, key=lambda k: k["kept_bytes"])
    return {"processes": len(kept), "pid": worst["pid"], "kept_bytes": worst["kept_bytes"],
            "live_heap": worst["live_heap"], "share": worst["share"]}
