import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from asanlab.reports import export
from asanlab.reports.findings import group
from asanlab.reports.sanitizers import Frame, parse

from .test_reports import FIXTURES, _leak, fixture_text

# OASIS's schema, shipped as test data (tests/fixtures/sarif/README.md says where from).
SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "sarif" / "sarif-schema-2.1.0.json"


def all_findings():
    reports = []
    for p in sorted(FIXTURES.glob("*.log")):
        reports += parse(fixture_text(p.stem))
    return group(reports + [_leak("zend_register_functions")])


@pytest.fixture(scope="module")
def sarif_schema():
    return json.loads(SCHEMA.read_text())


def test_sarif_is_valid_and_complete(sarif_schema):
    findings = all_findings()
    doc = json.loads(export.to_sarif(findings, app_entry="server.php"))
    jsonschema.Draft4Validator(sarif_schema).validate(doc)
    run = doc["runs"][0]
    assert len(run["results"]) == len(findings)
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    assert {"double-free", "heap-buffer-overflow", "heap-use-after-free", "SEGV", "leak"} <= set(rule_ids)
    by_rule = {r["ruleId"]: r for r in run["results"]}
    uaf = by_rule["heap-use-after-free"]
    assert uaf["level"] == "error" and uaf["partialFingerprints"]["asanlabSignature/v1"]
    labels = [loc["message"]["text"] for loc in uaf["relatedLocations"]]
    assert labels == ["allocated by: zif_ffi_trampoline", "freed by: zif_ffi_trampoline"]
    assert uaf["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "server.php"
    assert by_rule["leak"]["level"] == "warning"
    # Same signature, same fingerprint, whatever the run.
    again = json.loads(export.to_sarif(all_findings()))
    assert [r["partialFingerprints"] for r in again["runs"][0]["results"]] == \
           [r["partialFingerprints"] for r in run["results"]]


def test_the_schema_check_can_fail(sarif_schema):
    """The shipped schema really constrains: a result without its message is refused."""
    doc = json.loads(export.to_sarif(all_findings(), app_entry="server.php"))
    del doc["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError, match="message"):
        jsonschema.Draft4Validator(sarif_schema).validate(doc)


def test_sarif_maps_frames_in_the_app_folder_to_the_repository(sarif_schema):
    [f] = group(parse(fixture_text("double-free")))
    f.example.frames.insert(4, Frame(index=4, function="my_ext_fn", file="/app/ext/my.c", line=42))
    doc = json.loads(export.to_sarif([f]))
    jsonschema.Draft4Validator(sarif_schema).validate(doc)
    loc = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "ext/my.c", "uriBaseId": "SRCROOT"} and loc["region"]["startLine"] == 42


def test_junit_one_case_per_signature():
    findings = all_findings()
    root = ET.fromstring(export.to_junit(findings))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(findings)
    assert int(suite.get("failures")) == len([f for f in findings if f.category != "startup-leak"])
    assert int(suite.get("skipped")) == 1
    failure = next(c for c in cases if c.get("name").startswith("double-free")).find("failure")
    assert failure.get("type") == "double-free" and "attempting double-free" in failure.text


def test_app_entry_of():
    assert export.app_entry_of({"command": ["php", "/app/bin/server.php", "--x"]}) == "bin/server.php"
    assert export.app_entry_of({"command": ["php", "-r", "1"]}) is None
    assert export.app_entry_of({"command": ["php", "-d", "auto_prepend_file=/asanlab/config/sigterm.php",
                                            "/app/server.php"]}) == "server.php"
    assert export.app_entry_of(None) is None


def test_shown_command_leaves_out_asanlabs_prepend():
    from asanlab.run import SIGTERM_PREPEND
    from asanlab.reports.text import shown_command

    assert shown_command(["php", "-d", f"auto_prepend_file={SIGTERM_PREPEND}", "/app/s.php", "--x"]) == "php /app/s.php --x"
    assert shown_command(["php", "-d", "memory_limit=1G", "/app/s.php"]) == "php -d memory_limit=1G /app/s.php"
    assert shown_command(None) == ""


def test_sarif_marks_folded_start_up_leaks_suppressed(sarif_schema):
    """What the text folds is no code-scanning alert: each start-up leak is a suppressed result
    with the reason; every other finding has no suppression."""
    findings = all_findings()
    doc = json.loads(export.to_sarif(findings, app_entry="server.php"))
    jsonschema.Draft4Validator(sarif_schema).validate(doc)
    results = doc["runs"][0]["results"]
    startup = [r for r in results if r["properties"]["category"] == "startup-leak"]
    others = [r for r in results if r["properties"]["category"] != "startup-leak"]
    assert len(startup) == sum(f.category == "startup-leak" for f in findings) == 1
    assert startup[0]["suppressions"][0]["status"] == "accepted"
    assert "start-up" in startup[0]["suppressions"][0]["justification"]
    assert others and all("suppressions" not in r for r in others)
