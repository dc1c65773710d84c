"""The init command: write asanlab.yml, from a production image, from composer.json, or the default."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..project import PROJECT_FILE
from .common import app, err, out

NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def _name(hint: str) -> str:
    """A recipe name (the image's repository name) from an image reference or a folder's name."""
    base = hint.rsplit("/", 1)[-1].split("@")[0].split(":")[0].lower()
    parts = NAME.findall(re.sub(r"[^a-z0-9._-]+", "-", base))
    return "-".join(parts)[:64] or "app"


@app.command(epilog="Exit codes: 0 written, 2 usage error (an existing file, an image without PHP), 3 Docker.")
def init(
    from_image: Annotated[Optional[str], typer.Option("--from-image", metavar="IMAGE",
                                                      help="A production image to reproduce: asanlab runs it once "
                                                           "(read-only, no network, removed after) and reads its "
                                                           "PHP, extensions, Swoole and OS.")] = None,
    from_composer: Annotated[Optional[Path], typer.Option("--from-composer", metavar="FILE",
                                                          help="A composer.json: its require.php and ext-* "
                                                               "entries.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE",
                                         help="Where to write the recipe.")] = Path(PROJECT_FILE),
    name: Annotated[Optional[str], typer.Option(metavar="NAME", help="The recipe's name (its images' name). "
                                                                     "Default: the image's or the folder's name.")]
        = None,
    php_only: Annotated[bool, typer.Option("--php-only", help="With --from-image: the image has no Swoole, "
                                                              "reproduce its PHP alone.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists.")] = False,
) -> None:
    """Write asanlab.yml: a recipe that rebuilds your production PHP with the sanitizers.

    With neither --from-image nor --from-composer, asanlab's default (PHP 8.2, Swoole 6.1.9). What
    cannot be reproduced is listed at the end of the file, never dropped silently.
    """
    from ..image.recipe import RecipeError
    from ..init import mapping, writer
    from ..untrusted import atomic_write

    if from_image and from_composer:
        raise UsageError("--from-image and --from-composer: give one")
    if name is not None and not NAME.fullmatch(name):
        raise UsageError(f"--name {name!r}: lower-case letters, digits and . _ - between them")
    # Checked first and again at the write: nothing is probed for a file that would not be written.
    if os.path.lexists(output) and not force:
        raise UsageError(f"{output} exists: not overwritten", hint="--force overwrites it, -o FILE writes elsewhere")
    if from_image:
        from ..docker_client import client
        from ..init.probe import probe

        err.print(f"asanlab: reading image {from_image} (one throwaway container, no network)", markup=False)
        facts = probe(client(), from_image)
        plan = mapping.from_image(facts, from_image, name or _name(from_image), php_only=php_only)
    elif from_composer:
        from ..init.composer import from_composer as composer_plan

        plan = composer_plan(from_composer, name or _name(from_composer.resolve().parent.name))
    else:
        plan = mapping.default_plan(name or _name(Path.cwd().name))
    try:
        body = writer.text(plan)
    except RecipeError as e:  # the mapping made something the recipe loader refuses: asanlab's bug
        raise RuntimeError(f"asanlab init wrote a recipe it cannot load: {e.message}") from None
    if os.path.lexists(output) and not force:
        raise UsageError(f"{output} exists: not overwritten", hint="--force overwrites it, -o FILE writes elsewhere")
    atomic_write(output, body.encode())  # a rename: --force replaces a link there, never writes through it
    summary = f"PHP {plan.php_version}" + (f" (Debian's {plan.php_debian})" if plan.php_debian else "")
    summary += f", Swoole {plan.swoole_version}" if plan.swoole_version else ", no Swoole"
    summary += f", {len(plan.extensions)} other extension(s)" if plan.extensions else ""
    err.print(f"asanlab: wrote {output}: {summary}"
              + (f"; {len(plan.left_out)} thing(s) not reproduced, listed at its end" if plan.left_out else ""),
              markup=False)
    err.print(f"next: asanlab build{'' if output == Path(PROJECT_FILE) else ' ' + str(output)}, then "
              "asanlab run APP.php", markup=False)
    out.print(str(output), markup=False)
