"""The command line: thin commands over the core. The one place that prints and exits."""

from __future__ import annotations

import json
import math
import os
import sys
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__, gate, recipe as recipes, session as sessions, text
from .console import ConsoleReporter
from .docker_client import client
from .events import Event
from .errors import EXIT_INTERNAL, EXIT_USAGE, AsanlabError, BuildFailed, UsageError
from .gate import FailOn

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="PHP and Swoole under AddressSanitizer, LeakSanitizer and UBSan: "
                       "build an instrumented image, run your app in it, read what the sanitizers found.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_CODES = ("Exit codes: 0 no findings, 1 findings, 2 usage or recipe error, 3 infrastructure (Docker, network, "
              "build), 70 a bug in asanlab.")


def _ranged(name: str, low: float, high: float = math.inf, *, low_open: bool = False):
    """A typer callback: the value is a finite number in range (nan and inf pass click's own ranges)."""
    def check(value):
        if value is None:
            return value
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            bound += f" and <= {high:g}" if high != math.inf else ""
            raise typer.BadParameter(f"{value!r}: expected a number {bound}", param_hint=name)
        return value
    return check


class Format(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    junit = "junit"


FAIL_ON_HELP = ("any: exit 1 on any finding; new: only on findings absent from --baseline (or whose count grew), "
                "the CI gate for a pull request; none: report, exit 0. Default: new with --baseline, else any.")
REPLAY_FAIL_ON_HELP = FAIL_ON_HELP + (" A soak session's LEAK verdict exits 1 under any and new; none exits 0 "
                                      "whatever was found.")
BASELINE_HELP = ("A session (id or folder) or an image (its latest finished session here) to compare with: show "
                 "only findings it lacks, or whose count grew.")


class PullPolicy(str, Enum):
    missing = "missing"
    always = "always"
    never = "never"


PULL_HELP = ("missing: use the image here, else pull it from --registry, else build it (and say so); "
             "always: pull; never: use or build here.")

# Options that run and soak share.
SuppressionsOption = Annotated[Optional[list[Path]], typer.Option(
    "--suppressions", metavar="FILE", help="LeakSanitizer suppressions (leak:PATTERN lines), added to the recipe's.")]
PullOption = Annotated[PullPolicy, typer.Option("--pull", help=PULL_HELP)]
RegistryOption = Annotated[Optional[str], typer.Option(
    "--registry", metavar="PREFIX", envvar="ASANLAB_REGISTRY",
    help="Where recipes' images are published, e.g. ghcr.io/org/asanlab.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"asanlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    pass


@app.command(epilog=EXIT_CODES)
def build(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="The recipe (YAML).")],
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every stage, ignoring Docker's cache.")] = False,
    network: Annotated[Optional[str], typer.Option(help="Network for the build's RUN steps, e.g. host to reach "
                                                        "a package mirror only the host can.")] = None,
    print_dockerfile: Annotated[bool, typer.Option("--print-dockerfile",
                                                   help="Print the rendered Dockerfile and stop (no Docker).")] = False,
    frozen: Annotated[bool, typer.Option("--frozen", help="Refuse any source whose sha256 is not pinned "
                                                          "(recipe, php.net data or lock file). For CI.")] = False,
    push_to: Annotated[Optional[str], typer.Option("--push", metavar="PREFIX", help="Then push it as PREFIX/NAME:"
                                                   "sha-DIGEST and PREFIX/NAME:READABLE, e.g. "
                                                   "ghcr.io/org/asanlab.")] = None,
    cell: Annotated[Optional[str], typer.Option(help="A recipe with a matrix: build this cell only "
                                                     "(`asanlab matrix RECIPE` lists them).")] = None,
) -> None:
    """Build the recipe's instrumented image (a no-op when it is already built).

    A recipe with a matrix builds each of its cells, one after another (or only --cell).
    """
    from .build import build as do_build
    from .render import render

    base = recipes.load(recipe_path)
    cells = _cells(base, cell)
    if print_dockerfile:
        for c in cells:
            out.print(render(c.recipe).dockerfile, end="", markup=False)
        return
    from . import registry

    if push_to is not None:
        registry.check_prefix(push_to)
    reporter = ConsoleReporter(err)
    try:
        for c in cells:
            if len(cells) > 1:
                err.print(f"asanlab: cell {c.name}", markup=False)
            result = do_build(c.recipe, client, no_cache=no_cache, network=network, frozen=frozen,
                              reporter=reporter)
            out.print(f"{result.image_ref}\n{result.readable_ref}\nimage {result.image_id}", markup=False)
            if push_to is not None:
                repository, _, content_tag = result.image_ref.rpartition(":")
                remote = registry.remote(push_to, repository, content_tag, result.readable_ref.rpartition(":")[2])
                registry.push(client(), result.image_ref, remote, reporter=reporter)
                out.print(f"pushed {remote.ref}", markup=False)
    finally:
        reporter.close()


def _cells(base, name: str | None) -> list:
    """The cells to build: all buildable ones (the skipped said, with why), or the one named."""
    cells = recipes.expand(base)
    if name is not None:
        match = [c for c in cells if c.name == name]
        if not match:
            raise UsageError(f"{base.path}: no cell {name!r}; cells: {', '.join(c.name for c in cells)}")
        if match[0].skipped:
            raise UsageError(f"{base.path}: cell {name} cannot be built: {match[0].skipped}")
        return match
    for c in cells:
        if c.skipped:
            err.print(f"asanlab: skipped {c.name}: {c.skipped}", markup=False)
    buildable = [c for c in cells if not c.skipped]
    if not buildable:
        raise UsageError(f"{base.path}: no cell of the matrix can be built")
    return buildable


class MatrixFormat(str, Enum):
    text = "text"
    json = "json"
    github = "github"


@app.command(epilog=EXIT_CODES)
def matrix(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="The recipe (YAML), with a matrix: key.")],
    fmt: Annotated[MatrixFormat, typer.Option("--format", help="text; json (cells and skipped); github: one line "
                                                              "for a job's strategy.matrix (fromJSON).")]
    = MatrixFormat.text,
) -> None:
    """List a recipe's matrix cells, so that CI can fan them out over runners (one `build --cell` each)."""
    cells = recipes.expand(recipes.load(recipe_path))
    ok = [{"cell": c.name, **c.axes} for c in cells if not c.skipped]
    skipped = [{"cell": c.name, **c.axes, "reason": c.skipped} for c in cells if c.skipped]
    if fmt is MatrixFormat.github:
        for c in skipped:
            err.print(f"asanlab: skipped {c['cell']}: {c['reason']}", markup=False)
        sys.stdout.write(json.dumps({"include": ok}, separators=(",", ":")) + "\n")
    elif fmt is MatrixFormat.json:
        sys.stdout.write(json.dumps({"cells": ok, "skipped": skipped}, indent=2) + "\n")
    else:
        for c in ok:
            sys.stdout.write(f"{c['cell']}\n")
        for c in skipped:
            sys.stdout.write(f"{c['cell']}  skipped: {c['reason']}\n")


def _is_recipe(arg: str) -> bool:
    return arg.endswith((".yml", ".yaml")) or Path(arg).is_file()


@app.command(epilog=EXIT_CODES)
def push(
    what: Annotated[str, typer.Argument(metavar="RECIPE|IMAGE", help="A recipe whose image is built here, or "
                                                                      "an asanlab image.")],
    to: Annotated[str, typer.Option("--to", metavar="PREFIX", help="Registry and path, e.g. "
                                                                   "127.0.0.1:5000/asanlab or ghcr.io/org/asanlab.")],
) -> None:
    """Push an image built here, under its content-addressed tag and its readable tag."""
    from . import registry
    from .build import find_image

    registry.check_prefix(to)
    docker = client()
    if _is_recipe(what):
        rendered = registry.expected(recipes.load(Path(what)))
        if find_image(docker, rendered.image_ref) is None:
            raise UsageError(f"{rendered.image_ref} is not built on this machine", hint=f"asanlab build {what}")
        local, remote = rendered.image_ref, registry.remote_for(to, rendered)
    else:
        image = find_image(docker, what)
        labels = (image.labels or {}) if image is not None else {}
        if "org.asanlab.digest" not in labels:
            raise UsageError(f"{what}: not an asanlab image on this machine (no org.asanlab.digest label)")
        readable = next((t.rpartition(":")[2] for t in image.tags if ":sha-" not in t), "latest")
        local = what
        remote = registry.remote(to, f"asanlab/{labels['org.asanlab.recipe']}",
                                 f"sha-{labels['org.asanlab.digest'][:20]}", readable)
    reporter = ConsoleReporter(err)
    try:
        registry.push(docker, local, remote, reporter=reporter)
    finally:
        reporter.close()
    out.print(f"pushed {remote.ref}", markup=False)


@app.command(epilog=EXIT_CODES)
def pull(
    what: Annotated[str, typer.Argument(metavar="RECIPE|IMAGE", help="A recipe (its exact image is pulled by its "
                                                                      "content tag) or an image reference.")],
    source: Annotated[Optional[str], typer.Option("--from", metavar="PREFIX", envvar="ASANLAB_REGISTRY",
                                                  help="Registry and path the recipe's image was pushed to.")] = None,
) -> None:
    """Pull the image a recipe describes (exactly: by content tag, checked by its digest label), or any image."""
    from . import registry

    reporter = ConsoleReporter(err)
    try:
        if _is_recipe(what):
            if not source:
                raise UsageError("pulling a recipe's image needs --from PREFIX (or ASANLAB_REGISTRY)")
            rendered = registry.expected(recipes.load(Path(what)))
            image = registry.pull(client(), registry.remote_for(source, rendered), rendered, reporter=reporter)
            out.print(f"{rendered.image_ref}\nimage {image.id}", markup=False)
        else:
            image = registry.pull_image(client(), what, reporter=reporter)
            out.print(f"{what}\nimage {image.id}", markup=False)
    finally:
        reporter.close()


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
                                                                         "image.")] = None,
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
) -> None:
    """Run a PHP app (a Swoole server or a script) in the instrumented image and capture every report.

    Arguments after `--` go to the app.
    """
    _run(app_path=app_path, recipe_path=recipe_path, image=image, publish=publish or [], env=env or [],
         timeout=timeout, grace=grace, args=list(ctx.args), all_findings=all_findings, fmt=fmt, baseline=baseline,
         pull_policy=pull_policy, registry_prefix=registry_prefix, fail_on=fail_on,
         suppression_files=suppressions or [])


def _run(*, app_path: Path, recipe_path: Path | None, image: str | None = None, publish: list[str] = (),
         env: list[str] = (), timeout: float | None = None, grace: float = 15.0, args: list[str] = (),
         all_findings: bool = False, fmt: Format = Format.text, baseline: str | None = None, pull_policy: "PullPolicy" = None, registry_prefix: str | None = None,
         fail_on: FailOn | None = None, suppression_files: list[Path] | None = None) -> None:
    from .run import RunOptions, run as do_run

    if (recipe_path is None) == (image is None):
        raise UsageError("give exactly one of --recipe RECIPE or --image IMAGE")
    gate.policy_for(fail_on, bool(baseline))
    from . import suppressions as supp

    rules = supp.read(suppression_files or [])
    # Read the baseline first: a wrong id should stop the run before anything is built or started.
    baseline_findings = gate.load_baseline(baseline, client) if baseline else None
    reporter = ConsoleReporter(err)
    r = recipes.load(recipe_path) if recipe_path else None
    try:
        image_ref, image_id = _image_for(r, image, reporter, pull_policy, registry_prefix)
        result = do_run(client(), RunOptions(app=app_path, image=image_ref, image_id=image_id, args=list(args),
                                             ports=list(publish), env=list(env), timeout=timeout, grace=grace, recipe=r,
                                             suppressions=rules, agent=_agent_path(image_ref)),
                        reporter=reporter)
    finally:
        reporter.close()
    outcome = gate.decide(result.findings, baseline_findings, fail_on)
    _print_findings(result.session.data, outcome.shown, fmt, all_findings,
                    notices=sessions.session_notices(result.session))
    raise typer.Exit(outcome.exit_code)


def _suppressed(findings, files: list[Path] | None):
    """Findings minus the leaks the suppression files match; says how many were hidden."""
    if not files:
        return findings
    from . import suppressions as supp

    kept, hidden = supp.apply(findings, supp.read(files))
    if hidden:
        err.print(f"asanlab: {len(hidden)} leak finding(s) hidden by --suppressions", markup=False)
    return kept


def _image_for(r, image: str | None, reporter, policy: "PullPolicy" = None, prefix: str | None = None
               ) -> tuple[str, str]:
    """The recipe's image (here, pulled or built) or the image given (here or pulled): (reference, ID)."""
    from . import registry
    from .build import build as do_build, find_image
    from .events import Event

    policy = policy or PullPolicy.missing
    if policy is PullPolicy.always and r is not None and not prefix:
        raise UsageError("--pull always needs --registry PREFIX (or ASANLAB_REGISTRY) to pull a recipe's image from")
    if r is not None:
        if policy is not PullPolicy.never and prefix:
            rendered = registry.expected(r)
            local = find_image(client(), rendered.image_ref)
            if local is not None and policy is PullPolicy.missing:
                return rendered.image_ref, local.id
            try:
                pulled = registry.pull(client(), registry.remote_for(prefix, rendered), rendered, reporter=reporter)
                return rendered.image_ref, pulled.id
            except AsanlabError as e:
                if policy is PullPolicy.always:
                    raise
                reporter(Event("run.warning", f"{e.message}: building it here instead"))
        built = do_build(r, client, reporter=reporter)
        return built.image_ref, built.image_id
    assert image is not None
    from . import references

    if references.problem(image):
        raise UsageError(f"--image: {references.problem(image)}")
    if policy is PullPolicy.always or (policy is PullPolicy.missing and find_image(client(), image) is None):
        return image, registry.pull_image(client(), image, reporter=reporter).id
    return image, _image_id(image)


def _image_id(ref: str) -> str:
    from .build import find_image

    found = find_image(client(), ref)
    if found is None:
        raise UsageError(f"image {ref} is not on this machine", hint="build one with `asanlab build RECIPE`")
    return found.id


def _print_findings(session: dict | None, findings, fmt: Format, show_all: bool, full: bool = False,
                    notices: list | None = None) -> None:
    from . import export

    if fmt is Format.json:
        body = text.render_json(session, findings, notices)
    elif fmt is Format.sarif:
        body = export.to_sarif(findings, app_entry=export.app_entry_of(session))
    elif fmt is Format.junit:
        body = export.to_junit(findings)
    else:
        body = text.render(session, findings, show_all=show_all, full=full, notices=notices)
        if out.is_terminal:
            _print_coloured(body)
            return
    sys.stdout.write(body)


# Colour only on a terminal (rich also honours NO_COLOR); files and pipes get the plain text.
STYLES = [(r"^\[\d+\] (ERROR|UNDEFINED)", "bold red"), (r"^\[\d+\] LEAK", "bold yellow"),
          (r"^    \* #.*", "bold cyan"), (r"^  NOTE", "magenta"), (r"^soak: LEAK.*", "bold red"),
          (r"^soak: STABLE.*", "bold green"), (r"^soak: INCONCLUSIVE.*", "bold yellow"),
          (r"^\d+ finding\(s\).*", "bold")]


def _print_coloured(body: str) -> None:
    import re

    from rich.text import Text

    for line in body.splitlines():
        t = Text(line)
        for pattern, style in STYLES:
            m = re.match(pattern, line)
            if m:
                t.stylize(style, 0, m.end())
        out.print(t, highlight=False)


class TextOrJson(str, Enum):
    text = "text"
    json = "json"


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
                                                                         "image.")] = None,
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
                                             callback=_ranged("--threshold", 0))] = 1.0,
    min_growth: Annotated[int, typer.Option(help="Bytes a process must grow over the fitted window to be "
                                                 "called leaking.", callback=_ranged("--min-growth", 0))] \
        = 64 * 1024,
    budget: Annotated[int, typer.Option(help="MiB of growth a worker may reach, for the max_request advice.",
                                        callback=_ranged("--budget", 1))] = 64,
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
    fmt: Annotated[TextOrJson, typer.Option("--format", help="text, or json (the analysis).")] = TextOrJson.text,
    suppressions: SuppressionsOption = None,
    pull_policy: PullOption = PullPolicy.missing,
    registry_prefix: RegistryOption = None,
) -> None:
    """Drive exact numbers of requests and measure every PHP process's memory: does the app leak,
    how much per request, and which allocation stack grows.

    Arguments after `--` go to the app.
    """
    from . import load as loads
    from .run import RunOptions
    from .soak import SoakOptions, analyse_session, parse_checkpoints, soak as do_soak

    if (recipe_path is None) == (image is None):
        raise UsageError("give exactly one of --recipe RECIPE or --image IMAGE")
    points = parse_checkpoints(checkpoints)
    base = loads.check_url(url)
    if stats_url is not None:
        loads.check_url(stats_url, "--stats-url")
    if body is not None and body_file is not None:
        raise UsageError("give --body or --body-file, not both")
    for option, path in (("--body-file", body_file), ("--requests-file", requests_file)):
        if path is not None and path.exists() and not path.is_file():
            raise UsageError(f"{option} {path}: not a regular file")  # a FIFO or a device: read without end
    if body_file is not None:
        try:
            data = body_file.read_bytes()
        except OSError as e:
            raise UsageError(f"--body-file {body_file}: {e.strerror}") from None
    else:
        data = body.encode() if body is not None else None
    if requests_file is not None:
        reqs = loads.requests_from_file(requests_file, base)
    else:
        reqs = [loads.Request(method.upper(), base, tuple(loads.parse_header(h) for h in header or []), data)]
    if samples < 2:
        raise UsageError("--samples must be at least 2")
    if load_client is LoadClient.h2load and (why_not := loads.h2load_unavailable(reqs)):
        raise UsageError(f"--client h2load: {why_not}")
    from . import suppressions as supp

    rules = supp.read(suppressions or [])
    reporter = ConsoleReporter(err)
    r = recipes.load(recipe_path) if recipe_path else None
    try:
        image_ref, image_id = _image_for(r, image, reporter, pull_policy, registry_prefix)
        agent = _agent_path(image_ref)
        if agent is None:
            reporter(Event("soak.warning", f"{image_ref} has no asanlab agent (an image asanlab did not build): memory "
                                           "is measured from /proc only; no allocation stacks, PHP lines or "
                                           "variables, nor Swoole's coroutine counts"))
        run_opts = RunOptions(app=app_path, image=image_ref, image_id=image_id, args=list(ctx.args),
                              ports=publish or [], env=env or [], grace=grace, recipe=r, suppressions=rules)
        soak_opts = SoakOptions(requests=reqs, checkpoints=points, concurrency=concurrency,
                                samples_per_checkpoint=samples, ready_timeout=ready_timeout,
                                full_stacks=full_stacks, client=load_client.value, stats_url=stats_url)
        settings = {"url": base, "checkpoints": points, "concurrency": concurrency, "threshold": threshold,
                    "min_growth": min_growth, "warmup": points[0] if warmup is None else warmup,
                    "budget": budget * 2**20, "agent": agent, "full_stacks": full_stacks, "stats_url": stats_url}
        result = do_soak(client(), run_opts, soak_opts, agent_path=agent, settings=settings, reporter=reporter)
    finally:
        reporter.close()
    analysis = analyse_session(result.session)
    findings = result.findings
    if fmt is TextOrJson.json:
        sys.stdout.write(json.dumps({"session": result.session.id, "soak": analysis,
                                     "findings": [f.to_dict() for f in findings]}, indent=2) + "\n")
    else:
        _print_soak(result.session, analysis)
        _print_findings(result.session.data, findings, Format.text, False,
                        notices=sessions.session_notices(result.session))
    leak = analysis is not None and analysis["verdict"] == "LEAK"
    raise typer.Exit(gate.decide(findings, soak_leak=leak).exit_code)


def _agent_path(image_ref: str) -> str | None:
    """asanlab's agent's path in the image, from its label: only asanlab's images carry it."""
    from .build import find_image

    found = find_image(client(), image_ref)
    labels = (found.labels or {}) if found is not None else {}
    return labels.get("org.asanlab.agent")


def _print_soak(s, analysis: dict | None) -> None:
    from . import plot, soak_report
    from .soak import read_samples

    if analysis is None:
        sys.stdout.write("soak: no memory sample was taken\n")
        return
    chart = ""
    if out.is_terminal:
        chart = plot.terminal(read_samples(s), analysis, width=min(out.width, 100))
    rendered = soak_report.render(analysis, chart)
    if out.is_terminal:
        _print_coloured(rendered)
    else:
        sys.stdout.write(rendered)
    sys.stdout.write(f"samples, analysis and plot: {s.path / 'soak'}\n\n")


@app.command("sessions")
def list_sessions(fmt: Annotated[TextOrJson, typer.Option("--format", help="text or json.")] = TextOrJson.text) -> None:
    """List recorded sessions, oldest first (after closing those a killed asanlab left running)."""
    from .errors import DockerUnavailable
    from .run import recover_orphans

    try:
        recover_orphans(client(), ConsoleReporter(err))
    except DockerUnavailable:
        pass  # listing needs no Docker; the next run recovers them
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
    fmt: Annotated[Format, typer.Option("--format")] = Format.text,
    all_findings: Annotated[bool, typer.Option("--all", help="Also list start-up/shutdown leaks.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Print each finding's full report.")] = False,
    baseline: Annotated[Optional[str], typer.Option(help=BASELINE_HELP)] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help=REPLAY_FAIL_ON_HELP)] = None,
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
    _, findings = sessions.analyse(s)
    findings = _suppressed(findings, suppressions)
    baseline_findings = gate.load_baseline(baseline, client) if baseline else None
    soaked = None
    if s.data.get("kind") == "soak":
        from .soak import analyse_session

        soaked = analyse_session(s)
        if fmt is Format.text:
            _print_soak(s, soaked)
    outcome = gate.decide(findings, baseline_findings, fail_on,
                          soak_leak=soaked is not None and soaked["verdict"] == "LEAK")
    findings = outcome.shown
    if bundle is not None:
        from . import bundle as bundles
        from .errors import DockerUnavailable

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
    fmt: Annotated[Format, typer.Option("--format")] = Format.text,
    all_findings: Annotated[bool, typer.Option("--all", help="Also list start-up/shutdown leaks.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Print each finding's full report.")] = False,
    suppressions: Annotated[Optional[list[Path]], typer.Option("--suppressions", metavar="FILE",
                                                               help="Hide leaks these LeakSanitizer suppressions "
                                                                    "match (leak:PATTERN lines).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help=BASELINE_HELP)] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help=FAIL_ON_HELP)] = None,
) -> None:
    """Read sanitizer logs from anywhere (a production debug run, a CI artifact), without a session."""
    from .findings import group

    gate.policy_for(fail_on, bool(baseline))
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{missing[0]}: no such file or folder")
    odd = [p for p in paths if not (p.is_file() or p.is_dir())]
    if odd:  # a FIFO or a device would be read without end
        raise UsageError(f"{odd[0]}: not a regular file or a folder")

    def reports():
        for path in paths:
            for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
                yield from sessions.read_file(f, str(f))

    rules_files = suppressions or []
    from . import suppressions as supp

    supp.read(rules_files)  # a bad file stops here, before any log is read
    baseline_findings = gate.load_baseline(baseline, client) if baseline else None  # so does a wrong id
    findings = _suppressed(group(reports()), rules_files)  # streamed: one example report per finding
    outcome = gate.decide(findings, baseline_findings, fail_on)
    _print_findings(None, outcome.shown, fmt, all_findings, full, sessions.read_notices(paths))
    raise typer.Exit(outcome.exit_code)


@app.command(epilog=EXIT_CODES)
def demo(
    recipe_path: Annotated[Optional[Path], typer.Option("--recipe", help="Another recipe than the built-in PHP "
                                                                         "8.2 one.")] = None,
) -> None:
    """Build the built-in PHP 8.2 recipe and run a script with a real leak and a real double free."""
    data = resources.files("asanlab").joinpath("data")
    if recipe_path is None:
        recipe_path = Path(str(data.joinpath("php8.2.yml")))
    demo_app = Path(str(data.joinpath("demo.php")))
    _run(app_path=demo_app, recipe_path=recipe_path, timeout=300)


def main() -> None:
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except AsanlabError as e:
        err.print(f"asanlab: error: {e.message}", markup=False)
        if isinstance(e, BuildFailed):
            for line in e.tail[-20:]:
                err.print(f"  | {line}", markup=False)
            if e.log_path:
                err.print(f"full build log: {e.log_path}", markup=False)
        if e.hint:
            err.print(f"hint: {e.hint}", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("asanlab: interrupted")
        sys.exit(130)
    except Exception as e:
        # Command-line usage errors (unknown option, missing argument) arrive here in non-standalone
        # mode, as click exceptions; typer may carry its own copy of click, so match by behaviour.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(EXIT_USAGE)
        where = _write_traceback()
        err.print(f"asanlab: internal error: {type(e).__name__}: {str(e)[:300]} (a bug in asanlab; "
                  f"the traceback is in {where})", markup=False)
        sys.exit(EXIT_INTERNAL)


def _write_traceback() -> str:
    """The full traceback of an internal error, kept for the bug report: in asanlab's folder
    (.asanlab/crashes), else stderr."""
    import time
    import traceback

    from .state import state_dir

    text = traceback.format_exc()
    try:
        folder = state_dir() / "crashes"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        path.write_text(text)
        return str(path)
    except OSError:
        sys.stderr.write(text)
        return "the output above"
