"""A Plan as the commented asanlab.yml a user reads and keeps. Pure: text in, text out.

PyYAML drops comments, so the file is written line by line; every value in it has passed the
recipe schema's pattern for its key (mapping.py builds only such values), and the result is parsed
back with the recipe loader before it is written, so `init` never leaves a file `build` refuses.
"""

from __future__ import annotations

import json

from ..image import recipe as recipes
from .mapping import Plan


def _comment(lines: list[str], indent: str = "") -> list[str]:
    return [f"{indent}# {line}" for line in lines]


def _flags(values: list[str]) -> str:
    return "[" + ", ".join(values) + "]"


def text(plan: Plan) -> str:
    out = _comment(plan.header)
    out += _comment(["`asanlab build` builds this file; `asanlab run APP.php` and `asanlab soak APP.php` use it "
                     "when run here", "or from the app's folder. The keys: docs/reference/recipe.md."])
    out.append(f"name: {plan.name}")
    out += _comment(plan.notes.get("base_image", []))
    out.append(f"base_image: {plan.base_image}")
    if plan.compiler_version is not None:
        out += ["compiler:", f"  version: {plan.compiler_version}  # the clang this Debian release ships"]
    out += _comment(plan.notes.get("php", []))
    out += ["php:", f"  version: {json.dumps(plan.php_version)}"]
    if plan.php_debian:
        out += ["  source:", f"    debian: {plan.php_debian}"]
    if plan.php_configure:
        out.append(f"  configure: {_flags(plan.php_configure)}")
    if plan.php_zts:
        out.append("  zts: true")
    out += _comment(plan.notes.get("swoole", []))
    if plan.swoole_version:
        out += ["swoole:", f"  version: {json.dumps(plan.swoole_version)}"]
        if plan.swoole_configure:
            out.append(f"  configure: {_flags(plan.swoole_configure)}")
    if plan.extensions:
        out += _comment(["Other extensions, each built from its PECL release with the same sanitizers."])
        out.append("extensions:")
        for name, version in plan.extensions:
            out += [f"  - name: {name}", f"    version: {json.dumps(version)}"]
    if plan.build_packages:
        out += ["packages:", f"  build: {_flags(plan.build_packages)}  # Debian packages the builds above need"]
    out += ["sanitizers:", "  address: true", "  leak: true", "  undefined: true"]
    if plan.left_out:
        out += ["", "# Not reproduced:"] + _comment([f"- {line}" for line in plan.left_out])
    body = "\n".join(out) + "\n"
    recipes.parse(body)  # a RecipeError here is a bug in the mapping, not the user's
    return body
