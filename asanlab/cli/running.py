"""The run command: a PHP app in the instrumented image, its findings printed and gated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..reports import gate
from ..image import recipe as recipes
from .. import session as sessions
from ..console import ConsoleReporter
from ..docker_client import client
from ..errors import InfraError, UsageError
from ..reports.gate import FailOn
from ..image.choice import image_for, preloaded, tools_of
from .common import (recipe_or_project, EXIT_CODES, FAIL_ON_HELP, Format, PullOption, PullPolicy, RegistryOption, SuppressionsOption,
                     _ranged, app, err, full_stacks_for)
from .printing import _print_findings


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False}, epilog=EXIT_CODES + (
        " The container gets the SYS_PTRACE capability and nothing else: LeakSanitizer's final check "
        "suspends the process's threads with ptrace, which some kernels and seccomp profiles forbid "
        "without it. It never runs --privileged. PHP starts with -d auto_prepend_file=/asanlab/config/sigterm.php: "
        "as the container's PID 1 a script without a SIGTERM handler would ignore the stop and lose its leak "
        "report, so it gets one that exits normally (pcntl; replaced by any handler the app installs)."))
def run(
    ctx: typer.Context,
    app_path: Annotated[Path, typer.Argument(metavar="APP.php", help="The PHP entry point; its folder is mounted "
                                                                     "read-only at /app.")],
    recipe_path: Annotated[Optional[Path], typer.Option("--recipe", help="Build (if needed) and use this recipe's "
                                                                         "image. Default: asanlab.yml in the current "
                                                                         "folder, else in the app's folder, else the "
                                                                         "built-in default.")] = None,
    image: Annotated[Optional[str], typer.Option(help="Use this image instead of a recipe.")] = None,
    publish: Annotated[Optional[list[str]], typer.Option("-p", "--publish", help="[IP:]HOST:CONTAINER port; binds "
                                                         "127.0.0.1 unless an IP is given.")] = None,
    env: Annotated[Optional[list[str]], typer.Option("-e", "--env", help="KEY=VALUE for the app.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Stop the app after this many seconds.",
                                                  callback=_ranged("--timeout", 0, low_open=True))] = None,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL, for LeakSanitizer to "
                                              "write its reports.",
                                         callback=_ranged("--grace", 0, 3600))] = 15.0,
    all_findings: Annotated[bool, typer.Option("--all", help="Also list start-up/shutdown leaks.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the findings at the end.")] = Format.text,
    baseline: Annotated[Optional[str], typer.Option(help="A session (id, or a session folder such as the main "
                                                         "branch's CI artifact), or an image (its latest finished "
                                                         "session here) to compare with: report only findings it "
                                                         "lacks, or whose count grew.")] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help=FAIL_ON_HELP)] = None,
    suppressions: SuppressionsOption = None,
    pull_policy: PullOption = PullPolicy.missing,
    registry_prefix: RegistryOption = None,
    record: Annotated[bool, typer.Option("--record", help="Keep every byte clients send to the first published TCP "
                                                          "port (and the app's answers) in the session, for "
                                                          "`asanlab reproduce`; asanlab listens there and forwards.")]
        = False,
    valgrind: Annotated[bool, typer.Option("--valgrind", help="Run every PHP process under Valgrind's memcheck "
                                                               "(an image built with tools: [valgrind], which has no "
                                                               "ASan): one XML report per process, read like the "
                                                               "sanitizers'. Slow: 12x slower than release on Swoole's "
                                                               "hello world (make bench-speed), more where the app does "
                                                               "more in user space.")] = False,
    full_stacks: Annotated[bool, typer.Option("--full-stacks", help="Unwind allocation stacks with ASan's slow "
                                                                    "unwinder, through code without frame pointers "
                                                                    "(FFI's libffi, system libraries): complete C "
                                                                    "stacks, about 3.5x fewer requests per second. "
                                                                    "Always so in an image without asanlab's agent.")]
        = False,
) -> None:
    """Run a PHP app (a Swoole server or a script) in the instrumented image and capture every report.

    Arguments after `--` go to the app.
    """
    _run(app_path=app_path, recipe_path=recipe_path, image=image, publish=publish or [], env=env or [],
         timeout=timeout, grace=grace, args=list(ctx.args), all_findings=all_findings, fmt=fmt, baseline=baseline,
         pull_policy=pull_policy, registry_prefix=registry_prefix, fail_on=fail_on,
         suppression_files=suppressions or [], record=record, valgrind=valgrind, full_stacks=full_stacks)


def _run(*, app_path: Path, recipe_path: Path | None, image: str | None = None, publish: list[str] = (),
         env: list[str] = (), timeout: float | None = None, grace: float = 15.0, args: list[str] = (),
         all_findings: bool = False, fmt: Format = Format.text, baseline: str | None = None,
         pull_policy: PullPolicy | None = None, registry_prefix: str | None = None,
         fail_on: FailOn | None = None, suppression_files: list[Path] | None = None, record: bool = False,
         valgrind: bool = False, full_stacks: bool = False) -> None:
    from ..run import RunOptions, run as do_run
    from ..run.options import check_arguments

    if recipe_path is not None and image is not None:
        raise UsageError("--recipe and --image both name the image: give one")
    check_arguments(app_path, list(publish), list(env))
    gate.policy_for(fail_on, bool(baseline))
    from ..reports import suppressions as supp

    rules = supp.read(suppression_files or [])
    # Read the baseline first: a wrong id should stop the run before anything is built or started.
    baseline_session = gate.load_baseline(baseline, client) if baseline else None
    recipe_path = recipe_or_project(recipe_path, image, app_path)
    reporter = ConsoleReporter(err)
    r = recipes.load(recipe_path) if recipe_path else None
    try:
        # This module's client, passed down, so that a test can replace Docker in one place.
        image_ref, image_id = image_for(r, image, reporter, pull_policy, registry_prefix, docker=client)
        if valgrind and "valgrind" not in tools_of(image_ref, client):
            raise UsageError(f"--valgrind: image {image_ref[:71]} has no Valgrind",
                             hint="build a recipe with `tools: [valgrind]` (a debug image without ASan) and run "
                                  "with --recipe it")
        agent, handler = preloaded(image_ref, client, reporter, valgrind=valgrind)
        full_stacks = agent is None or full_stacks_for(full_stacks, baseline_session, rules)
        result = do_run(client(), RunOptions(app=app_path, image=image_ref, image_id=image_id, args=list(args),
                                             ports=list(publish), env=list(env), timeout=timeout, grace=grace, recipe=r,
                                             suppressions=rules, agent=agent, crash_handler=handler, record=record,
                                             valgrind=valgrind,
                                             # The agent names each leak's PHP code and start-up, so
                                             # a C stack cut short by the fast unwinder loses little.
                                             full_stacks=full_stacks),
                        reporter=reporter)
    finally:
        reporter.close()
    outcome = gate.decide(result.findings, baseline_session, fail_on)
    _print_findings(result.session.data, outcome.shown, fmt, all_findings,
                    notices=sessions.session_notices(result.session))
    if result.stop_reason == "disk-full" or result.session.unsaved:
        # The findings above stand; the run itself did not go as asked.
        raise InfraError(f"the disk under {result.session.path} is full or read-only"
                         f" ({result.session.unsaved or 'raw/output.log could not be written'}): the app was stopped "
                         "gracefully and what was written is kept", hint="free some space and run again")
    raise typer.Exit(outcome.exit_code)
