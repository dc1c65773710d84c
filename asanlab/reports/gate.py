"""The CI gate: which findings a command shows, and whether it exits 1.

One rule for run, replay, report and soak. `decide` is pure; `load_baseline` reads a session from
disk and asks Docker only when the reference is not a session. Neither imports the CLI or typer,
so a test or another tool can use the gate alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Sequence

from ..errors import EXIT_FINDINGS, EXIT_OK, AsanlabError, SessionError, UsageError
from .findings import Finding, failing, new_since


class FailOn(str, Enum):
    any = "any"    # every finding fails
    new = "new"    # only findings the baseline lacks, or whose count grew
    none = "none"  # never fails: report only


@dataclass(frozen=True)
class Outcome:
    shown: list[Finding]  # what to print: only the new findings when there is a baseline
    exit_code: int  # EXIT_OK or EXIT_FINDINGS
    policy: FailOn  # the policy applied, after the default


def policy_for(fail_on: FailOn | str | None, has_baseline: bool) -> FailOn:
    """The policy given, else new with a baseline and any without. Commands call it before any
    work so that `--fail-on new` without a baseline stops before anything is built or read."""
    chosen = FailOn(fail_on) if fail_on is not None else None
    if chosen is FailOn.new and not has_baseline:
        raise UsageError("--fail-on new needs --baseline SESSION: new compared with what?")
    return chosen or (FailOn.new if has_baseline else FailOn.any)


def decide(findings: Sequence[Finding], baseline: Sequence[Finding] | None = None,
           fail_on: FailOn | str | None = None, *, soak_leak: bool = False) -> Outcome:
    """The findings to show and the exit code.

    `baseline` is the baseline session's findings (None: no baseline; an empty list is a clean
    baseline). Start-up/shutdown leaks never fail (findings.failing). `soak_leak` is a soak's LEAK
    verdict: it fails like a finding under any and new, since it is the soak's own finding and has
    no baseline counterpart; none exits 0 whatever was found.
    """
    chosen = policy_for(fail_on, baseline is not None)
    shown = list(findings) if baseline is None else new_since(list(findings), list(baseline))
    # any judges everything found, even with a baseline: the baseline then only trims the output.
    judged = {FailOn.any: list(findings), FailOn.new: shown, FailOn.none: []}[chosen]
    fails = chosen is not FailOn.none and (soak_leak or bool(failing(judged)))
    return Outcome(shown=shown, exit_code=EXIT_FINDINGS if fails else EXIT_OK, policy=chosen)


def load_baseline(ref: str, docker: Callable[[], Any]) -> list[Finding]:
    """The findings of the session to compare with: a session id, 'latest' or a session folder;
    else an image, whose latest finished session here is used.

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
    return sessions.reports_and_findings(s)[1]
