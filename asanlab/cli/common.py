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
