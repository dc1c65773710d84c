"""A recipe's YAML read with the line of every key, checked against the JSON schema
(data/recipe.schema.json) with a sentence per problem, and bounded (size, expanded aliases,
control characters). Pure: recipe.py builds the Recipe from what passes."""

from __future__ import annotations

import difflib
import json
import re
from importlib import resources

import jsonschema
import yaml

# A recipe is a page of YAML: far above any real one, far below what hurts.
MAX_RECIPE_BYTES = 1024 * 1024
MAX_RECIPE_VALUES = 10_000  # after YAML aliases are expanded
CONTROL = re.compile(r"[\x00-\x1f\x7f]")



def walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], dupes: list[tuple]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                dupes.append(path + (key,))
            seen.add(key)
            walk(value_node, path + (key,), lines, dupes)
            lines[path + (key,)] = key_node.start_mark.line + 1  # the key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            walk(item, path + (i,), lines, dupes)


def fmt_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema() -> dict:
    return json.loads(resources.files("asanlab").joinpath("data/recipe.schema.json").read_text())


def schema_at(schema: dict, root: dict, path: tuple) -> dict:
    """The sub-schema that describes the value at path (follows $ref, allOf, items)."""
    def deref(s: dict) -> dict:
        while "$ref" in s:
            s = root["$defs"][s["$ref"].split("/")[-1]]
        if "allOf" in s:
            merged: dict = {}
            for part in s["allOf"]:
                part = deref(part)
                merged.setdefault("properties", {}).update(part.get("properties", {}))
            return merged
        return s

    s = deref(schema)
    for part in path:
        if isinstance(part, int):
            s = deref(s.get("items", {}))
        else:
            s = deref(s.get("properties", {}).get(part, {}))
    return s


def explain(err: jsonschema.ValidationError, root: dict) -> list[tuple[tuple, str]]:
    path = tuple(err.absolute_path)
    if err.validator == "additionalProperties":
        known = sorted(schema_at(root, root, path).get("properties", {}))
        out = []
        for key in err.instance:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else f"; known keys: {', '.join(known)}"
            out.append((path + (key,), f"unknown key{hint}"))
        return out
    if err.validator == "type":
        return [(path, f"expected {err.validator_value}, got {type(err.instance).__name__} {err.instance!r}")]
    if err.validator == "pattern":
        value = err.instance
        if isinstance(path[-1] if path else None, int) and "configure" in path:
            return [(path, f"{value!r} is not a configure flag of the form --name or --name=value "
                           "(no spaces, quotes or shell characters)")]
        return [(path, f"{value!r} is not valid here (must match {err.validator_value})")]
    if err.validator == "required":
        return [(path, err.message)]
    if err.validator == "enum":
        return [(path, f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}")]
    return [(path, err.message)]


def expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    """How many values the document holds once aliases are expanded, without expanding them
    (each node is counted once, then reused): nested aliases can otherwise make gigabytes."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = limit + 1  # an alias to a node still being counted: recursion, too large
    total = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += expanded_size(k, memo, limit) + expanded_size(v, memo, limit)
            if total > limit:
                break
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            total += expanded_size(item, memo, limit)
            if total > limit:
                break
    memo[id(node)] = total
    return total


def control_characters(data, path: tuple = ()) -> list[tuple[tuple, str]]:
    """Every key and string holding a control character (a newline included): no recipe value
    is multi-line, and each one ends up in a Dockerfile line or a command."""
    out: list[tuple[tuple, str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            if not isinstance(k, str):  # `? ` or `1:` in YAML: every recipe key is a name
                out.append((path + (str(k),), f"key {k!r} is not a name"))
                continue
            if CONTROL.search(k):
                out.append((path + (k,), f"key {k!r} holds a control character"))
            out += control_characters(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += control_characters(v, path + (i,))
    elif isinstance(data, str) and CONTROL.search(data):
        out.append((path, f"{data!r} holds a control character (a newline or a tab); values are one line"))
    return out


