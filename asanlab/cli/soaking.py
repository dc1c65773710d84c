"""The soak command: exact numbers of requests, every PHP process's memory measured, a verdict."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..reports import gate
from ..image import recipe as recipes
from .. import session as sessions
from ..console import ConsoleReporter
from ..docker_client import client
from ..errors import UsageError
from ..events import Event
from ..soak.growth import DEFAULT_BUDGET, Criteria
from ..image.choice import image_for, preloaded
from ..reports.gate import FailOn
from .common import (recipe_or_project, BASELINE_HELP, SOAK_FAIL_ON_HELP, Format, PullOption, PullPolicy, RegistryOption,
                     SuppressionsOption, TextOrJson, _ranged, app, err, full_stacks_for)
from .printing import _print_findings, _print_soak


class LoadClient(str, Enum):
    auto = "auto"
    builtin = "builtin"
    h2load = "h2load"


SOAK_EXIT = ("Exit codes: 0 stable (or undecided: the text says how many more requests would decide), 1 leak or "
             "sanitizer findings, 2 usage or recipe error, 3 infrastructure (Docker, the app never answered). "
             "As under run, the container gets SYS_PTRACE only (LeakSanitizer's exit check); memory is read "
             "from /proc with docker exec and by asanlab's agent inside PHP, never by attaching to the app.")


@app.command(epilog=SOAK_EXIT, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def soak(
    ctx: typer.Context,
    app_path: Annotated[Path, typer.Argument(metavar="APP.php", help="The server's entry point; its folder is "
                                                                     "mounted read-only at /app.")],
    url: Annotated[str, typer.Option(help="Where to send requests, as seen from this machine, e.g. "
                                          "http://127.0.0.1:9501/orders (publish the port with -p).")],
    recipe_path: Annotated[Optional[Path], typer.Option("--recipe", help="Build (if needed) and use this recipe's "
                                                                         "image. Default: asanlab.yml in the current "
                                                                         "folder, else in the app's folder, else the "
                                                                         "built-in default.")] = None,
    image: Annotated[Optional[str], typer.Option(help="Use this image: any image with PHP (and Swoole). Without "
                                                      "asanlab's agent only /proc memory is measured.")] = None,
    publish: Annotated[Optional[list[str]], typer.Option("-p", "--publish", help="[IP:]HOST:CONTAINER port.")] = None,
    env: Annotated[Optional[list[str]], typer.Option("-e", "--env", help="KEY=VALUE for the app.")] = None,
    checkpoints: Annotated[str, typer.Option(help="Request counts at which to take the full measurement "
                                                  "(table rows, heap profiles).")] = "1000,10000,100000",
    method: Annotated[str, typer.Option(help="HTTP method.")] = "GET",
    header: Annotated[Optional[list[str]], typer.Option("-H", "--header", help="'Name: value', repeatable.")] = None,
    body: Annotated[Optional[str], typer.Option(help="Request body.")] = None,
    body_file: Annotated[Optional[Path], typer.Option(help="Request body from a file.")] = None,
    requests_file: Annotated[Optional[Path], typer.Option(help="Requests to cycle through: one JSON object per "
                                                               "line with method, url (may be relative to --url), "
                                                               "headers, body.")] = None,
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", help="Requests in flight.",
                                             callback=_ranged("--concurrency", 1, 4096))] = 16,
    load_client: Annotated[LoadClient, typer.Option("--client", help="What sends the requests: h2load (Debian's "
                                                                    "nghttp2-client; several times faster), builtin "
                                                                    "(aiohttp; needed for a requests file), or auto "
                                                                    "(h2load when installed and able).")] \
        = LoadClient.auto,
    warmup: Annotated[Optional[int], typer.Option(help="Requests before the fit starts (default: the first "
                                                       "checkpoint).", callback=_ranged("--warmup", 0))] = None,
    threshold: Annotated[float, typer.Option(help="Bytes per request from which growth counts as a leak.",
                                             callback=_ranged("--threshold", 0))] = Criteria.threshold,
    min_growth: Annotated[int, typer.Option(help="Bytes a process must grow over the fitted window to be "
                                                 "called leaking.", callback=_ranged("--min-growth", 0))] \
        = Criteria.min_growth,
    budget: Annotated[int, typer.Option(help="MiB of growth a worker may reach, for the max_request advice.",
                                        callback=_ranged("--budget", 1))] = DEFAULT_BUDGET >> 20,
    samples: Annotated[int, typer.Option(help="Memory samples between two checkpoints.",
                                         callback=_ranged("--samples", 1, 1000))] = 8,
    full_stacks: Annotated[bool, typer.Option("--full-stacks", help="Unwind allocation stacks with ASan's slow "
                                                                    "unwinder, through code without frame pointers "
                                                                    "(FFI, system libraries): complete stacks, "
                                                                    "3-5x fewer requests per second.")] = False,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for the app to answer on --url.",
                                                 callback=_ranged("--ready-timeout", 0, low_open=True))] = 60.0,
    stats_url: Annotated[Optional[str], typer.Option(help="A URL of the app answering JSON with request_count, "
                                                          "e.g. json_encode($server->stats()): the server's own "
                                                          "count, read at each sample and shown beside asanlab's.")] \
        = None,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL at the end.",
                                         callback=_ranged("--grace", 0, 3600))] = 15.0,
    record: Annotated[bool, typer.Option("--record", help="Keep every request the app received (on the first "
                                                          "published port) in the session, for `asanlab reproduce`; "
                                                          "the recording proxy lowers the requests per second.")]
        = False,
    fmt: Annotated[TextOrJson, typer.Option("--format", help="text, or json (the analysis).")] = TextOrJson.text,
    baseline: Annotated[Optional[str], typer.Option(help=BASELINE_HELP + " A soak session's LEAK verdict is "
                                                         "compared too.")] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help=SOAK_FAIL_ON_HELP)] = None,
    suppressions: SuppressionsOption = None,
    pull_policy: PullOption = PullPolicy.missing,
    registry_prefix: RegistryOption = None,
) -> None:
    """Drive exact numbers of requests and measure every PHP process's memory: does the app leak,
    how much per request, and which allocation stack grows.

    Arguments after `--` go to the app.
    """
    from ..soak import load as loads
    from ..run import RunOptions
    from ..soak.driver import SoakOptions, soak_result, parse_checkpoints, soak as do_soak

    from ..run.options import check_arguments

    if recipe_path is not None and image is not None:
        raise UsageError("--recipe and --image both name the image: give one")
    check_arguments(app_path, publish or [], env or [])
    gate.policy_for(fail_on, bool(baseline))
    points = parse_checkpoints(checkpoints)
    base = loads.check_url(url)
    if stats_url is not None:
        loads.check_url(stats_url, "--stats-url")
    reqs = loads.requests_for(base, method=method, headers=header or [], body=body, body_file=body_file,
                              requests_file=requests_file)
    if samples < 2:
        raise UsageError("--samples must be at least 2")
    if load_client is LoadClient.h2load and (why_not := loads.h2load_unavailable(reqs)):
        raise UsageError(f"--client h2load: {why_not}")
    from ..reports import suppressions as supp

    rules = supp.read(suppressions or [])
    # A wrong baseline stops the soak before anything is built or started.
    baseline_session = gate.load_baseline(baseline, client) if baseline else None
    recipe_path = recipe_or_project(recipe_path, image, app_path)
    reporter = ConsoleReporter(err)
    r = recipes.load(recipe_path) if recipe_path else None
    try:
        image_ref, image_id = image_for(r, image, reporter, pull_policy, registry_prefix, docker=client)
        agent, handler = preloaded(image_ref, client, reporter)
        if agent is None:
            reporter(Event("soak.warning", f"{image_ref} has no asanlab agent (an image asanlab did not build): memory "
                                           "is measured from /proc only; no allocation stacks, PHP lines or "
                                           "variables, nor Swoole's coroutine counts"))
        run_opts = RunOptions(app=app_path, image=image_ref, image_id=image_id, args=list(ctx.args),
                              ports=publish or [], env=env or [], grace=grace, recipe=r, suppressions=rules,
                              record=record, crash_handler=handler)
        soak_opts = SoakOptions(requests=reqs, checkpoints=points, concurrency=concurrency,
                                samples_per_checkpoint=samples, ready_timeout=ready_timeout,
                                full_stacks=full_stacks_for(full_stacks, baseline_session),
                                client=load_client.value, stats_url=stats_url, url=base,
                                criteria=Criteria(threshold=threshold, min_growth=min_growth,
                                                  warmup=points[0] if warmup is None else warmup),
                                budget=budget * 2**20)
        result = do_soak(client(), run_opts, soak_opts, agent_path=agent, reporter=reporter)
    finally:
        reporter.close()
    analysis = soak_result(result.session)
    outcome = gate.decide(result.findings, baseline_session, fail_on, soak=analysis)
    findings = outcome.shown
    if fmt is TextOrJson.json:
        sys.stdout.write(json.dumps({"session": result.session.id, "soak": analysis,
                                     "findings": [f.to_dict() for f in findings]}, indent=2) + "\n")
    else:
        _print_soak(result.session, analysis)
        _print_findings(result.session.data, findings, Format.text, False,
                        notices=sessions.session_notices(result.session))
    if outcome.note:
        err.print(f"asanlab: {outcome.note}", markup=False)
    raise typer.Exit(outcome.exit_code)
