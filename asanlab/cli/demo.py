"""The demo command: the built-in recipe and a script with a real leak and a real double free.
Its own module, imported last, so that it stays last in --help (typer lists commands as registered)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import EXIT_CODES, app
from .running import _run


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
