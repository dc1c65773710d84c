"""Findings for CI: SARIF 2.1.0 (GitHub code scanning) and JUnit XML. Pure: findings in, text out."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

from .. import __version__
from ..printable import xml_text
from .findings import Category, Finding, failing, meaningful
from ..layout import APP_DIR
from .types import Frame, Tool
from .text import title, user_command

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/asanlab/asanlab"

RULE_HELP = {
    "leak": "Memory allocated and never freed, found by LeakSanitizer when the process exited.",
    "double-free": "The same heap block was freed twice.",
    "heap-use-after-free": "A heap block was read or written after it was freed.",
    "heap-buffer-overflow": "A read or write past the bounds of a heap block.",
    "SEGV": "The process touched an address it may not (often a NULL or wild pointer).",
}


def _rule_id(f: Finding) -> str:
    if f.is_leak:
        return "leak"
    if f.tool is Tool.UBSAN:
        return "undefined-behavior"
    return f.kind.replace(" ", "-")


def _level(f: Finding) -> str:
    return "warning" if f.is_leak else "error"


def _location(frame: Frame | None, app_entry: str | None) -> dict:
    """Map a frame to the user's repository when it lies in the app's folder (mounted at /app);
    otherwise point at the app's entry script, and say where the C frame was."""
    if frame is not None and frame.file and frame.file.startswith(APP_DIR + "/"):
        region = {"startLine": frame.line or 1}
        return {"physicalLocation": {"artifactLocation": {"uri": frame.file[len(APP_DIR) + 1:], "uriBaseId": "SRCROOT"},
                                     "region": region}}
    if app_entry:
        loc = {"physicalLocation": {"artifactLocation": {"uri": app_entry, "uriBaseId": "SRCROOT"},
                                    "region": {"startLine": 1}}}
    else:
        loc = {"physicalLocation": {"artifactLocation": {"uri": "unknown"}}}
    if frame is not None:
        loc["message"] = {"text": f"in {frame.describe()}"}
    return loc


def _frame_location(frame: Frame, label: str) -> dict:
    uri = frame.file or frame.module or "unknown"
    loc: dict = {"physicalLocation": {"artifactLocation": {"uri": "file://" + uri if uri.startswith("/") else uri}},
                 "message": {"text": f"{label}: {frame.function or '??'}"}}
    if frame.file and frame.line:
        loc["physicalLocation"]["region"] = {"startLine": frame.line}
    return loc


def to_sarif(findings: list[Finding], *, app_entry: str | None = None) -> str:
    """app_entry: the app's entry script relative to the repository root, e.g. "server.php"."""
    rules: list[dict] = []
    index: dict[str, int] = {}
    results = []
    for f in findings:
        rid = _rule_id(f)
        if rid not in index:
            index[rid] = len(rules)
            rules.append({"id": rid, "name": rid.replace("-", " ").title().replace(" ", ""),
                          "shortDescription": {"text": f"{f.tool}: {rid}"},
                          "help": {"text": RULE_HELP.get(rid, f"{f.tool} reported {rid}.")},
                          "defaultConfiguration": {"level": _level(f)},
                          "properties": {"tags": ["memory-safety" if f.tool is not Tool.UBSAN
                                                  else "undefined-behavior", f.tool]}})
        ex = f.example
        top = f.top_frame
        php = ex.php if ex is not None else None
        php_frame = php.app_frame() if php is not None else None
        # The app's PHP line is where a code-scanning alert belongs; the C frame goes in the message.
        primary = Frame(index=0, function=php_frame.function, file=php_frame.file, line=php_frame.line) \
            if php_frame else top
        related = []
        if ex is not None:
            for label, frames in (("allocated by", ex.allocated_by if not ex.is_leak else []),
                                  ("freed by", ex.freed_by)):
                first = meaningful(frames)[:1]
                if first:
                    loc = _frame_location(first[0], label)
                    loc["id"] = len(related)
                    related.append(loc)
        stack = [_frame_location(fr, f"#{fr.index}")["physicalLocation"] for fr in meaningful(ex.frames)[:10]] \
            if ex else []
        result = {
            "ruleId": rid, "ruleIndex": index[rid], "level": _level(f),
            "message": {"text": f"{title(f)} (x{f.count}, {f.category})" +
                                (f" in {top.describe()}" if top else "") +
                                (f", {php.label}: {php.path()}" if php is not None and php.frames else "") +
                                (f", request {php.request}" if php is not None and php.request else "")},
            "locations": [_location(primary, app_entry)],
            "partialFingerprints": {"asanlabSignature/v1": f.id},
            "properties": {"signature": f.signature, "count": f.count, "pids": f.pids, "category": f.category},
        }
        if f.category is Category.STARTUP_LEAK:
            # What the text report folds is not an alert: kept, marked as suppressed with the reason.
            result["suppressions"] = [{"kind": "external", "status": "accepted", "justification":
                                       "start-up/shutdown leak: allocated while PHP, an extension or the server "
                                       "started, and never freed at exit; it does not grow with requests"}]
        if php is not None:
            result["properties"]["php_stack"] = [str(fr) for fr in php.frames]
            if php.allocated_objects is not None:
                result["properties"]["php_allocated"] = {"objects": php.allocated_objects,
                                                         "of_listed": php.listed_objects}
            if php.request:
                result["properties"]["request"] = php.request
            if php.coroutine is not None:
                result["properties"]["coroutine"] = php.coroutine
        if related:
            result["relatedLocations"] = related
        if stack:
            result["stacks"] = [{"message": {"text": "where it happened"},
                                 "frames": [{"location": {"physicalLocation": p}} for p in stack]}]
        results.append(result)
    doc = {
        "$schema": SARIF_SCHEMA, "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "asanlab", "version": __version__, "informationUri": INFORMATION_URI,
                                      "rules": rules}},
                  "originalUriBaseIds": {"SRCROOT": {"description": {"text": "the app's repository"}}},
                  "results": results}],
    }
    return json.dumps(doc, indent=2) + "\n"


def to_junit(findings: list[Finding], *, suite: str = "asanlab") -> str:
    """One test case per signature: a failure for each finding, start-up/shutdown leaks skipped."""
    root = ET.Element("testsuites")
    failures = len(failing(findings))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(findings)), failures=str(failures),
                       errors="0", skipped=str(len(findings) - failures))
    for f in findings:
        case = ET.SubElement(ts, "testcase", classname=f"asanlab.{f.category}", name=f.signature[:200])
        if f.category is Category.STARTUP_LEAK:
            ET.SubElement(case, "skipped", message="start-up/shutdown leak (not a failure)")
            continue
        failure = ET.SubElement(case, "failure", message=f"{title(f)} x{f.count}", type=f.kind)
        failure.text = f.example.text if f.example else f.signature
        php = f.example.php if f.example else None
        if php is not None:
            head = [f"{'PHP' if php.allocated_objects is None else php.label}: {fr}" for fr in php.frames] + ([f"request: {php.request}"] if php.request else []) + \
                ([f"coroutine: {php.coroutine}"] if php.coroutine is not None else [])
            failure.text = "\n".join(head) + "\n\n" + failure.text
    for el in root.iter():  # the reports' text is the app's: XML 1.0 cannot hold every character
        el.text = xml_text(el.text) if el.text else el.text
        el.attrib.update({k: xml_text(v) for k, v in el.attrib.items()})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def app_entry_of(session: dict | None) -> str | None:
    """The app's entry script relative to its folder, from a session's command ["php", "/app/x.php", ...]."""
    command = user_command((session or {}).get("command"))
    if len(command) > 1 and command[1].startswith(APP_DIR + "/"):
        return str(PurePosixPath(command[1]).relative_to(APP_DIR))
    return None
