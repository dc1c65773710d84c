"""Commands about images: build (one recipe or its matrix cells), matrix, push and pull."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..image import recipe as recipes
from ..console import ConsoleReporter
from ..docker_client import client
from ..errors import UsageError
from .common import EXIT_CODES, RegistryOption, app, err, out, recipe_or_project


@app.command(epilog=EXIT_CODES, context_settings={"allow_extra_args": True})
def build(
    ctx: typer.Context,
    recipe_path: Annotated[Optional[Path], typer.Argument(metavar="RECIPE", show_default=False,
                                                          help="The recipe (YAML). Default: asanlab.yml in the "
                                                               "current folder, else the built-in default.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every stage, ignoring Docker's cache.")] = False,
    network: Annotated[Optional[str], typer.Option(help="Network for the build's RUN steps, e.g. host to reach "
                                                        "a package mirror only the host can.")] = None,
    print_dockerfile: Annotated[bool, typer.Option("--print-dockerfile",
                                                   help="Print the rendered Dockerfile and stop (no Docker).")] = False,
    frozen: Annotated[bool, typer.Option("--frozen", help="Refuse any source whose sha256 is not pinned "
                                                          "(recipe, php.net data or lock file). For CI.")] = False,
    push: Annotated[bool, typer.Option("--push", help="Then push it to --registry, as PREFIX/NAME:sha-DIGEST and "
                                                      "PREFIX/NAME:READABLE.")] = False,
    registry_prefix: RegistryOption = None,
    cell: Annotated[Optional[str], typer.Option(help="A recipe with a matrix: build this cell only "
                                                     "(`asanlab matrix RECIPE` lists them).")] = None,
) -> None:
    """Build the recipe's instrumented image (a no-op when it is already built).

    A recipe with a matrix builds each of its cells, one after another (or only --cell).
    """
    from ..image.build import build as do_build
    from ..image.render import render
    from ..image import registry

    recipe_path, push_to = _push_spelling(recipe_path, list(ctx.args), push, registry_prefix)
    base = recipes.load(recipe_or_project(recipe_path, None, None))
    cells = _cells(base, cell)
    if print_dockerfile:
        for c in cells:
            out.print(render(c.recipe).dockerfile, end="", markup=False)
        return
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


def _push_spelling(recipe_path: Path | None, extra: list[str], push: bool,
                   prefix: str | None) -> tuple[Path | None, str | None]:
    """(recipe, where to push). `--push PREFIX`, the spelling before --registry, still works for a
    release: the prefix arrives as an extra argument, or as the recipe when no recipe was given."""
    if len(extra) > 1 or extra and not push:
        raise UsageError(f"unexpected argument(s): {' '.join(extra)}")
    if not push:
        return recipe_path, None
    if extra:  # build RECIPE --push PREFIX
        err.print("asanlab: `build --push PREFIX` is now `build --push --registry PREFIX`", markup=False)
        return recipe_path, extra[0]
    if recipe_path is not None and not recipe_path.exists() and not recipe_path.suffix and prefix is None:
        err.print("asanlab: `build --push PREFIX` is now `build --push --registry PREFIX`", markup=False)
        return None, str(recipe_path)  # build --push PREFIX, with the project file
    if prefix is None:
        raise UsageError("--push needs --registry PREFIX (or ASANLAB_REGISTRY), e.g. ghcr.io/org/asanlab")
    return recipe_path, prefix


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


def _prefix(given: str | None, old: str | None, old_name: str, needed_for: str | None) -> str | None:
    """--registry, or the option's old name (said once); required when needed_for says why."""
    if old is not None:
        err.print(f"asanlab: {old_name} PREFIX is now --registry PREFIX", markup=False)
        given = old
    if given is None and needed_for:
        raise UsageError(f"{needed_for} needs --registry PREFIX (or ASANLAB_REGISTRY), e.g. ghcr.io/org/asanlab")
    return given


def _is_recipe(arg: str) -> bool:
    return arg.endswith((".yml", ".yaml")) or Path(arg).is_file()


@app.command(epilog=EXIT_CODES)
def push(
    what: Annotated[str, typer.Argument(metavar="RECIPE|IMAGE", help="A recipe whose image is built here, or "
                                                                      "an asanlab image.")],
    registry_prefix: RegistryOption = None,
    to: Annotated[Optional[str], typer.Option("--to", metavar="PREFIX", hidden=True,
                                              help="The old name of --registry.")] = None,
) -> None:
    """Push an image built here, under its content-addressed tag and its readable tag."""
    from ..image import registry

    to = _prefix(registry_prefix, to, "--to", "pushing")
    from ..image.build import find_image

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
    registry_prefix: RegistryOption = None,
    old_from: Annotated[Optional[str], typer.Option("--from", metavar="PREFIX", hidden=True,
                                                    help="The old name of --registry.")] = None,
) -> None:
    """Pull the image a recipe describes (exactly: by content tag, checked by its digest label), or any image."""
    from ..image import registry

    source = _prefix(registry_prefix, old_from, "--from", None)

    reporter = ConsoleReporter(err)
    try:
        if _is_recipe(what):
            if not source:
                raise UsageError("pulling a recipe's image needs --registry PREFIX (or ASANLAB_REGISTRY)")
            rendered = registry.expected(recipes.load(Path(what)))
            image = registry.pull(client(), registry.remote_for(source, rendered), rendered, reporter=reporter)
            out.print(f"{rendered.image_ref}\nimage {image.id}", markup=False)
        else:
            image = registry.pull_image(client(), what, reporter=reporter)
            out.print(f"{what}\nimage {image.id}", markup=False)
    finally:
        reporter.close()
