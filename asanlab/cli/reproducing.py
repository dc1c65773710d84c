"""The reproduce command: a recorded session's traffic replayed against fresh containers."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..image import recipe as recipes
from .. import project
from ..console import ConsoleReporter
from ..docker_client import client
from ..errors import InfraError, EXIT_FINDINGS, UsageError
from ..image.choice import image_for, preloaded, tools_of
from ..reports import gate
from ..reports.gate import FailOn
from ..run.traffic import most_open_at_once
from .common import BASELINE_HELP, EXIT_CODES, FAIL_ON_HELP, TextOrJson, _ranged, app, err, out


@app.command(epilog=EXIT_CODES)
def reproduce(
    ref: Annotated[str, typer.Argument(metavar="ID|latest|BUNDLE",
                                       help="A session recorded with `asanlab run --record`, or a reproducer "
                                            "bundle's folder (written by --minimize).")],
    runs: Annotated[int, typer.Option(help="How many times to replay the recording, each in a fresh container.",
                                      callback=_ranged("--runs", 1, 1000))] = 10,
    image: Annotated[Optional[str], typer.Option(help="Another image (a fix to verify) instead of the recorded one.")]
        = None,
    recipe: Annotated[Optional[Path], typer.Option(help="Build (or reuse) this recipe's image and replay there "
                                                        "(a fix to verify).")] = None,
    env: Annotated[Optional[list[str]], typer.Option("-e", "--env", help="KEY=VALUE for the app, added to the "
                                                                         "recorded ones.")] = None,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL after each replay.",
                                         callback=_ranged("--grace", 0, 3600))] = 15.0,
    fmt: Annotated[TextOrJson, typer.Option("--format", help="text or json.")] = TextOrJson.text,
    tries: Annotated[int, typer.Option(help="With --minimize: replays of each candidate; a candidate must bring the "
                                            "finding back as often as the whole recording did in as many replays "
                                            "(for a finding that comes back only some of the time).",
                                       callback=_ranged("--tries", 1, 100))] = 1,
    concurrent: Annotated[bool, typer.Option("--concurrent", help="Open the connections at their recorded times, "
                                                                 "side by side, and send each request at its recorded "
                                                                 "time (or after the answer before it): for a bug that "
                                                                 "needs two requests in flight at once. A bundle "
                                                                 "minimized this way replays this way.")] = False,
    recording: Annotated[Optional[Path], typer.Option(help="Replay this recording instead (for example a bundle's "
                                                             "recording.jsonl).")] = None,
    app_file: Annotated[Optional[Path], typer.Option("--app", metavar="APP.php",
                                                     help="The app to run, instead of the one the session or bundle "
                                                          "names (needed for a bundle too large to hold a copy).")]
        = None,
    finding: Annotated[Optional[str], typer.Argument(metavar="FINDING", show_default=False,
                                                     help="With --minimize: the finding to keep (its id or "
                                                          "signature). Default: the session's one error finding.")]
        = None,
    minimize: Annotated[bool, typer.Option("--minimize", help="Shrink the recording to the fewest requests that "
                                                              "still give FINDING, and write them with what runs "
                                                              "them as a reproducer bundle (reproducer/ in the "
                                                              "session).")] = False,
    baseline: Annotated[Optional[str], typer.Option(help=BASELINE_HELP + " Not with --minimize.")] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help=FAIL_ON_HELP + " Judges the findings that "
                                                                                      "came back in any replay.")]
        = None,
) -> None:
    """Replay a recorded session's traffic RUNS times and say, for each finding, how often it came back."""
    from ..reproduce.source import load
    from ..reproduce.target import Target, reproduce as do_reproduce

    if image and recipe:
        raise UsageError("--image and --recipe both name the image: give one")
    if finding is not None and not minimize:
        raise UsageError(f"{finding}: a finding is named only with --minimize",
                         hint=f"asanlab reproduce {ref} --minimize {finding}")
    if minimize and (baseline or fail_on):
        raise UsageError("--minimize keeps the one finding it is given: --baseline and --fail-on judge replays "
                         "without it")
    gate.policy_for(fail_on, bool(baseline))
    if app_file is not None and not app_file.is_file():
        raise UsageError(f"--app {app_file}: no such file")
    src = load(ref, recording, app_file.resolve() if app_file is not None else None)
    # A wrong baseline stops before any image is built or container started.
    baseline_session = gate.load_baseline(baseline, client) if baseline else None
    reporter = ConsoleReporter(err)
    try:
        image_ref, image_id, r = _image(src, image, recipe, reporter)
        if src.valgrind and "valgrind" not in tools_of(image_ref, client):
            raise UsageError(f"{src.id} ran under Valgrind (run --valgrind), and image {image_ref[:71]} has none",
                             hint="give an image built with `tools: [valgrind]`")
        agent, handler = preloaded(image_ref, client, reporter, valgrind=src.valgrind)
        target = Target(client(), src, image_ref, image_id, agent, _free_port(),
                        env=env or [], grace=grace, recipe=r, reporter=reporter, crash_handler=handler,
                        concurrent=concurrent or src.concurrent)
        if minimize:
            _minimize(target, finding, fmt, tries)
            return
        outcome = do_reproduce(target, runs=runs)
    finally:
        reporter.close()
    judged = gate.decide(list(outcome.findings.values()), baseline_session, fail_on)
    new = {f.signature for f in judged.shown}
    if fmt is TextOrJson.json:
        out.print(json.dumps({"source": src.id, "image": image_ref, **outcome.to_dict(),
                              "connections_at_once": most_open_at_once(src.conns),
                              **({"new": sorted(new)} if baseline_session is not None else {})}, indent=2),
                  markup=False)
    else:
        out.print(f"reproduce {src.id} in {image_ref[:40]}: {runs} run(s), sessions {', '.join(outcome.sessions)}",
                  markup=False)
        for sig, f in outcome.findings.items():
            mark = "" if sig in outcome.original else "  (not in the recording's findings)"
            if baseline_session is not None and sig not in new:
                mark += "  (in the baseline)"
            out.print(f"  came back {outcome.rate(sig):>9}  {f.category}  {sig}  id {f.id}{mark}", markup=False)
        for sig in outcome.original:
            if sig not in outcome.seen:
                out.print(f"  gone in {runs} of {runs}  {sig}", markup=False)
        hint = _concurrent_hint(target)
        if hint and any(sig not in outcome.seen for sig in outcome.original):
            out.print(f"  {hint}", markup=False)
        if not outcome.findings:
            out.print("  no finding came back", markup=False)
        died = Counter(u for rep in outcome.replayed for u in rep.unanswered)
        for line, n in died.most_common(5):
            out.print(f"  no answer to {line} in {n} of {runs} run(s) (the request a worker died on?)", markup=False)
        unlike = Counter(d for rep in outcome.replayed for d in rep.differed)
        for line, n in unlike.most_common(5):
            out.print(f"  answered unlike the recording: {line}, in {n} of {runs} run(s)", markup=False)
        if len(unlike) > 5:
            out.print(f"  ... and {len(unlike) - 5} more answer(s) unlike the recording (--format json lists them)",
                      markup=False)
    if outcome.not_this_app:
        compared = outcome.replayed[0].compared
        raise UsageError(f"none of {src.app.name}'s answers to the {compared} recorded requests matched the recording, "
                         f"in {runs} run(s): is it a recording of this app?",
                         hint="replay the session that recorded it, or give --recording of this app's traffic")
    raise typer.Exit(judged.exit_code)


def _image(src, image: str | None, recipe_file: Path | None, reporter):
    """(reference, ID, recipe) to replay in: --recipe's image, --image, or the recorded one."""
    if recipe_file is not None:
        r = recipes.load(recipe_file)
        ref, image_id = image_for(r, None, reporter)
        return ref, image_id, r
    # The recorded recipe's run-time options (sanitizer options, suppressions) as the run had them.
    r = recipes.load(src.recipe_path) if src.recipe_path and src.recipe_path.is_file() else None
    if image:
        return image, _image_id(image), r
    for ref in [src.image_id, *src.image_refs]:
        if ref and _image_id(ref, missing_ok=True):
            return ref, _image_id(ref), r
    shown = (src.image_refs or [src.image_id or "(none recorded)"])[0]
    # The recorded image is not here: its recipe builds it again, else the project's asanlab.yml.
    # Never the built-in default: a session replayed under another PHP than it ran on says little.
    # A bundle's recipe came from someone else: it is built only when the user names it (--recipe).
    if r is not None and src.bundle is None:
        err.print(f"asanlab: image {shown[:71]} is not on this machine: building the recipe the session "
                  f"recorded ({src.recipe_path})", markup=False)
        ref, image_id = image_for(r, None, reporter)
        return ref, image_id, r
    found = project.find(src.app)
    if not found.builtin:
        err.print(f"asanlab: image {shown[:71]} is not on this machine and the session holds no recipe: "
                  f"{found.why}", markup=False)
        r = recipes.load(found.path)
        ref, image_id = image_for(r, None, reporter)
        return ref, image_id, r
    how = f"`asanlab reproduce {src.id} --recipe {src.bundle / 'recipe.yml'}` builds it" \
        if src.bundle is not None and src.recipe_path else "build the recipe again (`asanlab build`) or pull it"
    raise UsageError(f"image {shown[:71]} is not on this machine", hint=f"{how}, or give --image")


def _image_id(ref: str, missing_ok: bool = False) -> str | None:
    from docker.errors import DockerException

    try:
        return client().images.get(ref).id
    except DockerException:
        if missing_ok:
            return None
        raise UsageError(f"image {ref[:71]} is not on this machine",
                         hint="build it (`asanlab build RECIPE`) or pull it") from None


def _only_error(src) -> list:
    """The finding to keep when none is named: the one error (ASan, UBSan), else the one finding."""
    errors = [e for e in src.expected if e.category in ("error", "undefined")]
    for candidates in (errors, src.expected):
        if len(candidates) == 1:
            return candidates
    listed = ", ".join(f"{e.id} ({e.category})" for e in (errors or src.expected)[:8])
    raise UsageError(f"{src.id} has {len(errors) or len(src.expected)} failing finding(s): name the one to keep"
                     + (f" ({listed})" if listed else ""),
                     hint=f"asanlab reproduce {src.id} --minimize FINDING")


def _minimize(target, wanted: str | None, fmt: TextOrJson, tries: int) -> None:
    from ..reproduce import reproducer
    from ..reproduce.minimize import minimize
    from ..run.traffic import all_units

    src = target.source
    if wanted is None:
        match = _only_error(src)
        err.print(f"asanlab: minimizing for {src.id}'s one error finding, {match[0].id} ({match[0].signature[:80]})",
                  markup=False)
    else:
        match = [e for e in src.expected if wanted in (e.id, e.signature)]
    if not match:
        raise UsageError(f"no failing finding {wanted!r} in {src.id}",
                         hint="`asanlab replay ID` lists the findings with their ids")
    wanted_sig = match[0].signature
    try:
        shrunk = minimize(all_units(src.conns), lambda keep: any(
            f.signature == wanted_sig for f in target.replay(src.conns, {"minimize": wanted_sig}, keep=keep)[0]),
            tries=tries, reporter=target.reporter)
    except UsageError as e:
        hint = _concurrent_hint(target)
        if hint:
            raise UsageError(e.message, hint=hint) from None
        raise
    finding = None
    if src.session is not None:
        from ..session import reports_and_findings

        finding = next((f.to_dict() for f in reports_and_findings(src.session)[1] if f.signature == wanted_sig), None)
    # Minutes of replays found these requests: they are printed even when the bundle cannot be written.
    try:
        folder, unwritten = reproducer.write(src, shrunk, match[0], finding, concurrent=target.concurrent), None
    except OSError as e:
        folder, unwritten = None, f"{e.filename or src.output_dir}: {e.strerror}"
    if fmt is TextOrJson.json:
        out.print(json.dumps({"source": src.id, "signature": wanted_sig, "bundle": str(folder) if folder else None,
                              "file": str(folder / "recording.jsonl") if folder else None,
                              **({"not_written": unwritten} if unwritten else {}),
                              "rate": {"hits": shrunk.hits, "original_hits": shrunk.original_hits, "tries": tries},
                              "candidates": shrunk.candidates, "replays": shrunk.replays,
                              "requests": [{"connection": r.connection, "index": r.index, "request": r.line}
                                           for r in shrunk.requests]}, indent=2), markup=False)
    else:
        rate = f" ({shrunk.hits} of {tries}; the whole recording {shrunk.original_hits} of {tries})" if tries > 1 else ""
        out.print(f"{len(shrunk.requests)} of {len(all_units(src.conns))} request(s) and WebSocket message(s) still give "
                  f"{wanted_sig}{rate}, found in {shrunk.replays} replays:", markup=False)
        for r in shrunk.requests:
            out.print(f"  connection {r.connection} #{r.index}: {r.line}", markup=False)
        if folder is not None:
            out.print(f"reproducer bundle: {folder}  (run it: asanlab reproduce {folder})", markup=False)
    if unwritten:
        raise InfraError(f"the reproducer bundle could not be written ({unwritten}); the requests above are the result",
                         hint="make the folder writable, or copy the session somewhere writable and minimize there")
    raise typer.Exit(EXIT_FINDINGS)


def _concurrent_hint(target) -> str | None:
    """Why a finding may not have come back: connections that overlapped, replayed one by one."""
    at_once = most_open_at_once(target.source.conns)
    if at_once < 2 or target.concurrent:
        return None
    return (f"the recording had {at_once} connections open at once and they were replayed one after another: "
            "--concurrent replays them as they overlapped")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
