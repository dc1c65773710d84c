"""Commands that read what was recorded or logged: sessions, replay and report (no run needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..reports import gate, text
from .. import session as sessions
from .. import untrusted
from ..console import ConsoleReporter
from ..docker_client import client
from ..errors import AsanlabError, UsageError
from ..reports.gate import FailOn
from .common import BASELINE_HELP, EXIT_CODES, FAIL_ON_HELP, SOAK_FAIL_ON_HELP, Format, TextOrJson, app, err, out
from .printing import _print_findings, _print_soak


def _suppressed(findings, files: list[Path] | None):
    """Findings minus the leaks the suppression files match; says how many were hidden."""
    if not files:
        return findings
    from ..reports import suppressions as supp

    kept, hidden = supp.apply(findings, supp.read(files))
    if hidden:
        err.print(f"asanlab: {len(hidden)} leak finding(s) hidden by --suppressions", markup=False)
    return kept


@app.command("sessions")
def list_sessions(
    fmt: Annotated[TextOrJson, typer.Option("--format", help="text or json.")] = TextOrJson.text,
    recover: Annotated[bool, typer.Option("--recover", help="First stop the containers of runs whose asanlab was "
                                                            "killed, keep their reports and close their sessions "
                                                            "(the next run or soak does it too).")] = False,
) -> None:
    """List recorded sessions, oldest first. Changes nothing unless --recover is given."""
    from ..errors import DockerUnavailable

    if recover:
        from ..run import recover_orphans

        closed = recover_orphans(client(), ConsoleReporter(err))
        err.print(f"asanlab: {len(closed)} session(s) recovered", markup=False)
    else:
        from .. import containers

        try:
            orphaned = len(containers.orphans(client()))
        except DockerUnavailable:
            orphaned = 0  # listing needs no Docker
        if orphaned:
            err.print(f"asanlab: {orphaned} container(s) outlived the asanlab that started them: their sessions say "
                      "running; `asanlab sessions --recover` stops them and keeps their reports", markup=False)
    rows = []
    for sid in sessions.list_ids():
        try:
            s = sessions.load(sid)
        except AsanlabError as e:  # one broken session does not hide the others
            rows.append({"id": sid, "kind": "?", "status": "unreadable", "stop_reason": None, "exit_code": None,
                         "command": None, "failing": None, "error": e.message})
            continue
        rows.append({"id": sid, "kind": s.data.get("kind", "run"), "status": s.data.get("status"),
                     "stop_reason": s.data.get("stop_reason"),
                     "exit_code": s.data.get("exit_code"), "command": s.data.get("command"),
                     "failing": (s.data.get("counts") or {}).get("failing")})
    if fmt is TextOrJson.json:
        out.print(json.dumps(rows, indent=2), markup=False)
        return
    if not rows:
        out.print(f"no sessions in {sessions.sessions_dir()}", markup=False)
    for row in rows:
        if row.get("error"):
            out.print(f"{row['id']}  unreadable: {row['error']}", markup=False)
            continue
        out.print(f"{row['id']}  {row['kind']:<4} {row['status']:<8} {str(row['stop_reason']):<11} "
                  f"exit {row['exit_code']}  "
                  f"findings {row['failing']}  {text.shown_command(row['command'])}", markup=False)


@app.command(epilog=EXIT_CODES)
def replay(
    ref: Annotated[str, typer.Argument(metavar="ID|latest", help="A session id, 'latest', or a session folder.")],
    fmt: Annotated[Format, typer.Option("--format", help="text; json; sarif (code scanning); junit (a test report "
                                                         "per finding).")] = Format.text,
    all_findings: Annotated[bool, typer.Option("--all", help="Also list start-up/shutdown leaks.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Print each finding's full report.")] = False,
    baseline: Annotated[Optional[str], typer.Option(help=BASELINE_HELP)] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help=SOAK_FAIL_ON_HELP)] = None,
    bundle: Annotated[Optional[Path], typer.Option(help="Also write a bug-report bundle (tar.gz): findings, raw "
                                                        "logs, recipe, php -v and php --ri from the image.")] = None,
    symbolize: Annotated[bool, typer.Option("--symbolize", help="Resolve module+offset frames with llvm-symbolizer "
                                                               "in the session's image (needs Docker once; the "
                                                               "answers are kept in the session).")] = False,
    suppressions: Annotated[Optional[list[Path]], typer.Option("--suppressions", metavar="FILE",
                                                               help="Hide leaks these LeakSanitizer suppressions "
                                                                    "match (leak:PATTERN lines).")] = None,
) -> None:
    """Re-read a session's raw logs with the current parser (no Docker) and print its findings."""
    gate.policy_for(fail_on, bool(baseline))  # a wrong flag stops before --symbolize starts a container
    s = sessions.load(ref)
    if symbolize:
        n = sessions.symbolize(s, client())
        err.print(f"asanlab: symbolized {n} frame location(s) in {(s.data.get('image') or {}).get('id', '')[:19]}",
                  markup=False)
    _, findings = sessions.reports_and_findings(s)
    findings = _suppressed(findings, suppressions)
    baseline_session = gate.load_baseline(baseline, client) if baseline else None
    soaked = None
    if s.data.get("kind") == "soak":
        from ..soak.driver import soak_result

        soaked = soak_result(s)
        if fmt is Format.text:
            _print_soak(s, soaked)
    outcome = gate.decide(findings, baseline_session, fail_on, soak=soaked)
    if outcome.note:
        err.print(f"asanlab: {outcome.note}", markup=False)
    findings = outcome.shown
    if bundle is not None:
        from .. import bundle as bundles
        from ..errors import DockerUnavailable

        notices = sessions.session_notices(s)
        try:
            docker = client()
        except DockerUnavailable:
            docker = None  # the bundle says what is missing; the rest needs no Docker
        names = bundles.write(s, bundle, text.render(s.data, findings, show_all=True, full=True, notices=notices),
                              text.render_json(s.data, findings, notices), docker)
        err.print(f"asanlab: wrote {bundle} ({len(names)} files)", markup=False)
    _print_findings(s.data, findings, fmt, all_findings, full, sessions.session_notices(s))
    raise typer.Exit(outcome.exit_code)


@app.command(epilog=EXIT_CODES)
def report(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Sanitizer logs, or folders of them.")],
    fmt: Annotated[Format, typer.Option("--format", help="text; json; sarif (code scanning); junit (a test report "
                                                         "per finding).")] = Format.text,
    all_findings: Annotated[bool, typer.Option("--all", help="Also list start-up/shutdown leaks.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Print each finding's full report.")] = False,
    suppressions: Annotated[Optional[list[Path]], typer.Option("--suppressions", metavar="FILE",
                                                               help="Hide leaks these LeakSanitizer suppressions "
                                                                    "match (leak:PATTERN lines).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help=BASELINE_HELP)] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help=FAIL_ON_HELP)] = None,
    image: Annotated[Optional[str], typer.Option(help="The image that wrote the logs: frames given as module+offset "
                                                      "(a run without llvm-symbolizer) are symbolized there first, "
                                                      "as replay --symbolize does.")] = None,
    recipe_path: Annotated[Optional[Path], typer.Option("--recipe", help="As --image, with this recipe's image "
                                                                         "(built if needed).")] = None,
) -> None:
    """Read sanitizer logs from anywhere (a production debug run, a CI artifact), without a session."""
    from ..reports import symbolize as sym
    from ..reports.findings import group

    gate.policy_for(fail_on, bool(baseline))
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{missing[0]}: no such file or folder")
    odd = [p for p in paths if not (p.is_file() or p.is_dir())]
    if odd:  # a FIFO or a device would be read without end
        raise UsageError(f"{odd[0]}: not a regular file or a folder")

    if image and recipe_path:
        raise UsageError("--image and --recipe both name the image: give one")

    def reports(table=None, seen=None, unnamed=None):
        for path in paths:
            for f in untrusted.walk(path) if path.is_dir() else [path]:
                for r in sessions.read_file(f, str(f)):
                    if table:
                        sym.apply([r], table)
                    if seen is not None:
                        for module, offsets in sym.wanted([r]).items():
                            seen.setdefault(module, set()).update(offsets)
                    if unnamed is not None:  # [frames without a function name, frames]
                        frames = list(sym.all_frames(r))
                        unnamed[0] += sum(1 for fr in frames if not fr.function)
                        unnamed[1] += len(frames)
                    yield r

    rules_files = suppressions or []
    from ..reports import suppressions as supp

    supp.read(rules_files)  # a bad file stops here, before any log is read
    baseline_session = gate.load_baseline(baseline, client) if baseline else None  # so does a wrong id
    table = None
    if image or recipe_path:
        # Two passes over the logs, each streamed: which frames lack a location, then the findings.
        need: dict[str, set[str]] = {}
        for _ in reports(seen=need):
            pass
        if need:
            docker = client()
            if recipe_path is not None:
                from ..image import recipe as recipes
                from ..image.choice import image_for

                reporter = ConsoleReporter(err)
                try:
                    image, _ = image_for(recipes.load(recipe_path), None, reporter, docker=client)
                finally:
                    reporter.close()
            table = sym.resolve(docker, image, need)
            err.print(f"asanlab: symbolized {len(table)} frame location(s) in {image[:71]}", markup=False)
    unnamed = [0, 0]
    findings = _suppressed(group(reports(table, unnamed=unnamed)), rules_files)  # one example report per finding
    # Symbolized logs name nearly every frame (a few of libc's start-up code stay module+offset).
    if unnamed[0] > unnamed[1] / 2 and not (image or recipe_path):
        err.print(f"asanlab: {unnamed[0]} of {unnamed[1]} frames in these logs are not symbolized (module+offset): without "
                  "function names start-up leaks cannot be told from the app's, so some findings below may be "
                  "start-up leaks. `--image IMAGE` (the image that wrote them) symbolizes them first", markup=False)
    outcome = gate.decide(findings, baseline_session, fail_on)
    _print_findings(None, outcome.shown, fmt, all_findings, full, sessions.read_notices(paths))
    raise typer.Exit(outcome.exit_code)
