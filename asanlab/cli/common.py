"""What every command shares: the one typer app, the consoles, and the options and help texts
more than one command offers."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from ..console import SafeConsole

from .. import __version__
from ..image.choice import PullPolicy
from ..reports.gate import Baseline

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="PHP and Swoole under AddressSanitizer, LeakSanitizer and UBSan: "
                       "build an instrumented image, run your app in it, read what the sanitizers found.")
out = SafeConsole(highlight=False, soft_wrap=True)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True)

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
SOAK_FAIL_ON_HELP = FAIL_ON_HELP + (" A soak's LEAK verdict exits 1 under any; under new unless the baseline's soak "
                                    "said LEAK too and this one's bytes/request is not significantly more; none "
                                    "exits 0 whatever was found.")
BASELINE_HELP = ("A session (id or folder) or an image (its latest finished session here) to compare with: show "
                 "only findings it lacks, or whose count grew.")
# The pull policy's values live with image choice (no typer there); its help is the CLI's.
PULL_HELP = ("missing: use the image here, else pull it from --registry, else build it (and say so); "
             "always: pull; never: use or build here.")

# Options that run and soak share.
SuppressionsOption = Annotated[Optional[list[Path]], typer.Option(
    "--suppressions", metavar="FILE", help="LeakSanitizer suppressions (leak:PATTERN lines), added to the recipe's.")]
PullOption = Annotated[PullPolicy, typer.Option("--pull", help=PULL_HELP)]
RegistryOption = Annotated[Optional[str], typer.Option(
    "--registry", metavar="PREFIX", envvar="ASANLAB_REGISTRY",
    help="Where recipes' images are published, e.g. ghcr.io/org/asanlab.")]


def recipe_or_project(recipe_path: Path | None, image: str | None, app_path: Path | None) -> Path | None:
    """--recipe or --image as given; with neither, the project file (or the built-in default), said."""
    from ..errors import UsageError
    from .. import project

    if recipe_path is not None and image is not None:
        raise UsageError("--recipe and --image both name the image: give one")
    if recipe_path is not None or image is not None:
        return recipe_path
    found = project.find(app_path)
    err.print(f"asanlab: {found.why}", markup=False)
    return found.path


def full_stacks_for(asked: bool, baseline: Baseline | None, rules: list[str] | None = None) -> bool:
    """--full-stacks, or complete stacks where frame pointers would mislead: against a baseline that
    unwound completely (a leak's signature is its stack, and one cut short would look new), and
    with suppression rules (they match any frame of a leak's allocation stack, and a frame below the
    cut would no longer be there to match)."""
    if asked:
        return True
    if baseline is not None and baseline.stacks == "full":
        why = "as in the baseline session, so that its leaks compare"
    elif rules:
        why = "so that suppression rules see every frame of a leak's allocation stack"
    else:
        return False
    err.print(f"asanlab: allocation stacks unwound completely (as with --full-stacks), {why}")
    return True


# Option values as docker's and pip's help name them (no Python type names): one word per kind of
# value, the same on every command. A choice lists its values instead.
METAVARS = {
    "--recipe": "FILE", "--image": "IMAGE", "--publish": "PORT", "--env": "KEY=VALUE", "--timeout": "SECONDS",
    "--grace": "SECONDS", "--ready-timeout": "SECONDS", "--baseline": "SESSION|IMAGE", "--url": "URL",
    "--stats-url": "URL", "--checkpoints": "N,N,...", "--method": "METHOD", "--header": "'NAME: VALUE'",
    "--body": "TEXT", "--body-file": "FILE", "--requests-file": "FILE", "--recording": "FILE", "--bundle": "FILE",
    "--concurrency": "N", "--warmup": "N", "--samples": "N", "--runs": "N", "--tries": "N",
    "--threshold": "BYTES", "--min-growth": "BYTES", "--budget": "MIB", "--network": "NETWORK", "--cell": "CELL",
}


def command():
    """The click command typer makes of the app, with help in the style of docker's and pip's:
    every value named by METAVARS or its choices, arguments by their name alone (typer would print
    `{APP.php} <path>`). The entry point and the generated reference both use it."""
    group = typer.main.get_command(app)
    for sub in group.commands.values():
        for p in sub.params:
            if type(p).__name__ == "TyperArgument":
                shown = (p.metavar or p.name.upper()) if p.required else f"[{p.metavar or p.name.upper()}]"
                shown += "..." if p.nargs != 1 else ""
                p.display_type_rich = lambda ctx: None
                p._usage_display_name = lambda shown=shown: shown
            elif not getattr(p, "is_flag", False) and p.metavar is None:
                long = next((o for o in p.opts if o.startswith("--")), p.opts[0])
                choices = getattr(p.type_descriptor, "choices", None) if getattr(p, "type_descriptor", None) else None
                p.metavar = METAVARS.get(long) or ("|".join(str(getattr(c, "value", c)) for c in choices)
                                                   if choices else long.lstrip("-").upper())
    return group


def _version(value: bool) -> None:
    if value:
        out.print(f"asanlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    pass


class TextOrJson(str, Enum):
    text = "text"
    json = "json"
