"""A run's session closed: its reports read once more, counts and findings saved."""

from __future__ import annotations

from .. import session as sessions
from ..reports.findings import Finding, failing


def close_session(s: sessions.Session, *, status: str, stop_reason: str, exit_code: int | None, error: str | None,
           abnormal: list[dict]) -> list[Finding]:
    """The session's end: its reports read once more, counts and findings saved."""
    reports, findings = sessions.reports_and_findings(s)
    s.data.update({
        "status": status, "ended": sessions.now(), "stop_reason": stop_reason, "exit_code": exit_code,
        "error": error, "abnormal_exits": abnormal, "processes": _processes(reports),
        "counts": {"reports": len(reports), "findings": len(findings), "failing": len(failing(findings))},
    })
    s.save()
    s.save_findings(findings)
    return findings


def _processes(reports) -> list[dict]:
    by_pid: dict[int, dict] = {}
    for r in reports:
        if r.pid is None:
            continue
        p = by_pid.setdefault(r.pid, {"pid": r.pid, "reports": 0, "log": r.source})
        p["reports"] += 1
    return [by_pid[k] for k in sorted(by_pid)]
