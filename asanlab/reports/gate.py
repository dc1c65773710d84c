"""The CI gate: which findings a command shows, and whether it exits 1.

One rule for run, replay, report, soak and reproduce. `decide` is pure; `load_baseline` reads a session from
disk and asks Docker only when the reference is not a session. Neither imports the CLI or typer,
so a test or another tool can use the gate alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping, Sequence

from .. import untrusted
from ..errors import EXIT_FINDINGS, EXIT_OK, AsanlabError, SessionError, UsageError
from ..soak.growth import LEAK  # a soak's verdict that fails like a finding
from .findings import Finding, failing, new_since


class FailOn(str, Enum):
    any = "any"    # every finding fails
    new = "new"    # only findings the baseline lacks, or whose count grew
    none = "none"  # never fails: report only


@dataclass(frozen=True)
class Baseline:
    """What a gate compares with: a session's findings, and its soak's analysis when it was a soak."""
    findings: list[Finding]
    soak: Mapping[str, Any] | None = None
    # How its allocation stacks were unwound, "full" or "fast": a leak's signature is its stack, so
    # a run compared with it unwinds the same way (session.stacks_of).
    stacks: str = "full"


@dataclass(frozen=True)
class Outcome:
    shown: list[Finding]  # what to print: only the new findings when there is a baseline
    exit_code: int  # EXIT_OK or EXIT_FINDINGS
    policy: FailOn  # the policy applied, after the default
    note: str | None = None  # why a soak's LEAK did not fail, when it did not


def leak_known(soak: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None) -> str | None:
    """Why a soak's LEAK is not new against the baseline's soak, or None when it is new.

    Not new: the baseline soak said LEAK too and this soak's bytes/request is not significantly
    more (its interval's low end does not pass the baseline interval's high end). A leak that grew
    is new, as a finding whose count grew is."""
    if not soak or soak.get("verdict") != LEAK or not baseline or baseline.get("verdict") != LEAK:
        return None
    now, before = soak.get("interval"), baseline.get("interval")
    if now and before and now[0] > before[1]:
        return None
    rate = baseline.get("bytes_per_request")
    there = f" ({rate:.1f} B/request there)" if isinstance(rate, (int, float)) else ""
    return f"the baseline's soak leaked too{there}: this LEAK is not new"


def policy_for(fail_on: FailOn | str | None, has_baseline: bool) -> FailOn:
    """The policy given, else new with a baseline and any without. Commands call it before any
    work so that `--fail-on new` without a baseline stops before anything is built or read."""
    chosen = FailOn(fail_on) if fail_on is not None else None
    if chosen is FailOn.new and not has_baseline:
        raise UsageError("--fail-on new needs --baseline SESSION: new compared with what?")
    return chosen or (FailOn.new if has_baseline else FailOn.any)


def decide(findings: Sequence[Finding], baseline: Baseline | Sequence[Finding] | None = None,
           fail_on: FailOn | str | None = None, *, soak: Mapping[str, Any] | None = None) -> Outcome:
    """The findings to show and the exit code.

    `baseline` is the baseline session (None: no baseline; an empty list is a clean baseline).
    Start-up/shutdown leaks never fail (findings.failing). `soak` is this run's soak analysis: its
    LEAK verdict fails like a finding under any; under new it fails unless the baseline's soak
    leaked as much (leak_known). none exits 0 whatever was found.
    """
    chosen = policy_for(fail_on, baseline is not None)
    if baseline is not None and not isinstance(baseline, Baseline):
        baseline = Baseline(list(baseline))
    shown = list(findings) if baseline is None else new_since(list(findings), baseline.findings)
    # any judges everything found, even with a baseline: the baseline then only trims the output.
    judged = {FailOn.any: list(findings), FailOn.new: shown, FailOn.none: []}[chosen]
    leaked = bool(soak) and soak.get("verdict") == LEAK
    note = leak_known(soak, baseline.soak) if chosen is FailOn.new and baseline is not None else None
    fails = chosen is not FailOn.none and ((leaked and note is None) or bool(failing(judged)))
    return Outcome(shown=shown, exit_code=EXIT_FINDINGS if fails else EXIT_OK, policy=chosen, note=note)


def load_baseline(ref: str, docker: Callable[[], Any]) -> Baseline:
    """The session to compare with: a session id, 'latest' or a session folder; else an image,
    whose latest finished session here is used. Its findings, and its soak's stored analysis.

    `docker` makes the Docker client (docker_client.client). It is called only when `ref` is not a
    session, so a session id or a copied session folder (a CI artifact) needs no daemon.
    """
    from .. import session as sessions

    try:
        s = sessions.load(ref)
    except SessionError as not_a_session:
        from ..image.build import find_image

        try:
            image = find_image(docker(), ref)
        except AsanlabError:  # no daemon: the reference could only have been a session
            image = None
        if image is None:
            raise not_a_session from None
        s = sessions.latest_of_image(image.id, ref)
    return Baseline(sessions.reports_and_findings(s)[1], _stored_soak(s.path), sessions.stacks_of(s.data))


def _stored_soak(folder) -> dict | None:
    """The analysis a soak session stored (soak/analysis.json); read, never recomputed, so that
    the baseline session is left as it was."""
    try:  # a baseline is often a CI artifact: an untrusted document
        data = json.loads(untrusted.read_text(folder / "soak" / "analysis.json", under=folder))
    except (OSError, ValueError, untrusted.UntrustedFileError):
        return None
    return data if isinstance(data, dict) else None
