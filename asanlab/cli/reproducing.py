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
) -> None:
    """Replay a recorded session's traffic RUNS times and say, for each finding, how often it came back."""
    from ..reproduce import plan, reproduce as do_reproduce

    from docker.errors import DockerException

    s, conns = plan(ref)
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
    try:
        outcome = do_reproduce(docker, s, conns, runs=runs, image=ref_image, image_id=found.id,
                               agent=agent_path(ref_image, client), port=_free_port(), env=env or [], grace=grace,
                               recipe=r, reporter=reporter)
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
