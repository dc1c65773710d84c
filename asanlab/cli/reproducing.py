"""The reproduce command: a recorded session's traffic replayed against fresh containers."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import recipe as recipes
from ..console import ConsoleReporter
from ..docker_client import client
from ..errors import EXIT_FINDINGS, EXIT_OK, UsageError
from ..image_choice import agent_path
from .common import EXIT_CODES, TextOrJson, _ranged, app, err, out


@app.command(epilog=EXIT_CODES)
def reproduce(
    ref: Annotated[str, typer.Argument(metavar="ID|latest", help="A session recorded with `asanlab run --record`.")],
    runs: Annotated[int, typer.Option(help="How many times to replay the recording, each in a fresh container.",
                                      callback=_ranged("--runs", 1, 1000))] = 10,
    image: Annotated[Optional[str], typer.Option(help="Another image (a fix to verify) instead of the session's.")]
        = None,
    env: Annotated[Optional[list[str]], typer.Option("-e", "--env", help="KEY=VALUE for the app, added to the "
                                                                         "session's.")] = None,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL after each replay.",
                                         callback=_ranged("--grace", 0, 3600))] = 15.0,
    fmt: Annotated[TextOrJson, typer.Option("--format", help="text or json.")] = TextOrJson.text,
    tries: Annotated[int, typer.Option(help="With --minimize: replays of each candidate before it counts as not "
                                            "giving the finding (for a finding that comes back only some of the "
                                            "time).", callback=_ranged("--tries", 1, 100))] = 1,
    recording: Annotated[Optional[Path], typer.Option(help="Replay this recording instead of the session's (for "
                                                             "example its traffic/minimized.jsonl).")] = None,
    minimize: Annotated[Optional[str], typer.Option("--minimize", metavar="ID|SIGNATURE",
                                                    help="Shrink the recording to the fewest requests that still give "
                                                         "this finding (its id or signature), one replay per try; "
                                                         "writes them to the session's traffic/minimized.jsonl.")]
        = None,
) -> None:
    """Replay a recorded session's traffic RUNS times and say, for each finding, how often it came back."""
    from ..reproduce import Target, plan, reproduce as do_reproduce

    from docker.errors import DockerException

    s, conns = plan(ref, recording)
    docker = client()
    ref_image = image or (s.data.get("image") or {}).get("id") or ""
    try:
        found = docker.images.get(ref_image)
    except DockerException:
        raise UsageError(f"image {ref_image[:40] or '(none recorded)'} is not on this machine",
                         hint="build the session's recipe again (`asanlab build`) or pull it, or give --image") from None
    # The recipe's run-time options (sanitizer options, suppressions) as the recorded run had them.
    recipe_path = Path(s.data.get("recipe_path") or "")
    r = recipes.load(recipe_path) if s.data.get("recipe_path") and recipe_path.is_file() else None
    reporter = ConsoleReporter(err)
    target = Target(docker, s, ref_image, found.id, agent_path(ref_image, client), _free_port(), env=env or [],
                    grace=grace, recipe=r, reporter=reporter)
    try:
        if minimize is not None:
            _minimize(target, conns, minimize, fmt, tries)
            return
        outcome = do_reproduce(target, conns, runs=runs)
    finally:
        reporter.close()
    if fmt is TextOrJson.json:
        out.print(json.dumps({"session": s.id, "image": ref_image, **outcome.to_dict()}, indent=2), markup=False)
    else:
        out.print(f"reproduce {s.id} in {ref_image[:40]}: {runs} run(s), sessions {', '.join(outcome.sessions)}",
                  markup=False)
        for sig, f in outcome.findings.items():
            mark = "" if sig in outcome.original else "  (not in the recorded session)"
            out.print(f"  came back {outcome.rate(sig):>9}  {f.category}  {sig}  id {f.id}{mark}", markup=False)
        for sig in outcome.original:
            if sig not in outcome.seen:
                out.print(f"  gone in {runs} of {runs}  {sig}", markup=False)
        if not outcome.findings:
            out.print("  no finding came back", markup=False)
    raise typer.Exit(EXIT_FINDINGS if outcome.seen else EXIT_OK)


def _minimize(target, conns, wanted: str, fmt: TextOrJson, tries: int) -> None:
    from .. import session as sessions, traffic
    from ..reproduce import minimize

    findings = sessions.analyse(target.session)[1]
    match = [f for f in findings if wanted in (f.id, f.signature)]
    if not match:
        raise UsageError(f"no finding {wanted!r} in session {target.session.id}",
                         hint="`asanlab replay ID` lists the findings with their ids")
    kept = minimize(target, conns, match[0].signature, tries)
    keep = {(r.connection, r.index) for r in kept}
    path = target.session.path / "traffic" / "minimized.jsonl"
    traffic.write(path, conns, keep)
    if fmt is TextOrJson.json:
        out.print(json.dumps({"session": target.session.id, "signature": match[0].signature, "file": str(path),
                              "requests": [{"connection": r.connection, "index": r.index, "request": r.line}
                                           for r in kept]}, indent=2), markup=False)
    else:
        out.print(f"{len(kept)} request(s) still give {match[0].signature} (written to {path}):", markup=False)
        for r in kept:
            out.print(f"  connection {r.connection} #{r.index}: {r.line}", markup=False)
    raise typer.Exit(EXIT_FINDINGS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
