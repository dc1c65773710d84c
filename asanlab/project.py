"""The project file: which recipe a command uses when none is named.

`asanlab.yml` in the current folder, else in the app's folder (as Compose finds compose.yaml), else
the built-in default. The choice is said in one line, with why, so a user is never unsure which
PHP they are running under.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

PROJECT_FILE = "asanlab.yml"


def default_recipe() -> Path:
    """The built-in default recipe (PHP 8.2 from Debian's source package, Swoole 6.1.9)."""
    return Path(str(resources.files("asanlab").joinpath("data", "default.yml")))


@dataclass(frozen=True)
class Found:
    path: Path
    why: str  # one line, for stderr

    @property
    def builtin(self) -> bool:
        return self.path == default_recipe()


def find(app: Path | None = None, cwd: Path | None = None) -> Found:
    """The recipe to use when the command line names none. No I/O beyond looking for the file."""
    cwd = cwd or Path.cwd()
    here = cwd / PROJECT_FILE
    if here.is_file():
        return Found(here, f"recipe {PROJECT_FILE} (found in the current folder)")
    if app is not None:
        folder = app.parent if app.suffix == ".php" or app.is_file() else app
        beside = folder / PROJECT_FILE
        # The app's folder may hold a pull request's files: a link there is not followed.
        if not beside.is_symlink() and beside.is_file() and beside.resolve() != here.resolve():
            return Found(beside, f"recipe {beside} (found in the app's folder; none in the current folder)")
    where = "the current folder" + (" or the app's folder" if app is not None else "")
    return Found(default_recipe(), f"recipe: the built-in default, PHP 8.2 + Swoole 6.1.9 (no {PROJECT_FILE} in "
                                   f"{where}; `asanlab init` writes one)")
