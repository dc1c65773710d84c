"""The PHP side of sanitizer reports (asanlab/php_stack.py): the agent's blocks matched to their
reports by the ERROR line, and shown in text, JSON, SARIF and JUnit."""

import json
from pathlib import Path
import xml.etree.ElementTree as ET

import jsonschema

from asanlab import export, php_stack, soak_report, text
from asanlab.findings import group
from asanlab.reports import Report, parse

from .test_export import SCHEMA
from .test_reports import fixture_text

ERROR_LINE = "==1==ERROR: AddressSanitizer: attempting double-free on 0x606000013640 in thread T0:"
BLOCK = f"""report {ERROR_LINE}
frame free\t\t0
frame remember_order\t/app/server.php\t15
frame {{closure}}\t/app/server.php\t9
frame Swoole\\Http\\Server::start\t\t0
frame {{main}}\t/app/server.php\t21
request POST /orders?id=7
coroutine 12
end
"""


def test_blocks_are_read_by_their_report_line():
    stacks = php_stack.parse("noise before\n" + BLOCK + "report ==2==ERROR: x\nframe {main}\t/app/a.php\t3\n")
    s = stacks[ERROR_LINE]
    assert [str(f) for f in s.frames] == ["free()", "remember_order() /app/server.php:15", "{closure}() /app/server.php:9",
                                          "Swoole\\Http\\Server::start()", "{main} /app/server.php:21"]
    assert s.request == "POST /orders?id=7" and s.coroutine == 12
    assert php_stack.PhpStack.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert stacks["==2==ERROR: x"].coroutine is None
    assert s.app_frame() == php_stack.PhpFrame("remember_order", "/app/server.php", 15)
    assert s.path(2) == "remember_order() /app/server.php:15 <- {closure}() /app/server.php:9"
    # A block cut short by the process dying keeps what it has.
    assert [str(f) for f in stacks["==2==ERROR: x"].frames] == ["{main} /app/a.php:3"]


def test_hostile_lines_are_ignored():
    stacks = php_stack.parse("report ==1==ERROR: y\nframe \t\t\nframe f\t/app/x.php\t99999999999999999999\n"
                             "frame g\t/app/x.php\t١٢\nrequest \nend\nframe stray\t/app/x.php\t1\n")
    assert [(f.function, f.line) for f in stacks["==1==ERROR: y"].frames] == [("f", None), ("g", None)]
    assert stacks["==1==ERROR: y"].request is None


def double_free_finding(tmp_path):
    reports = parse(fixture_text("double-free"))
    folder = tmp_path / "raw" / "php"
    folder.mkdir(parents=True)
    (folder / "php-backtrace.1").write_text(BLOCK)
    assert php_stack.attach(reports, php_stack.read_folder(folder)) == 1
    [f] = group(reports)
    return f


def test_report_keeps_its_php_stack_through_json(tmp_path):
    f = double_free_finding(tmp_path)
    again = Report.from_dict(json.loads(json.dumps(f.example.to_dict())))
    assert again.php == f.example.php


def test_text_names_the_php_line_and_the_request(tmp_path):
    out = text.render(None, [double_free_finding(tmp_path)])
    assert "    in PHP: remember_order() /app/server.php:15 <- {closure}() /app/server.php:9 <- " in out
    assert "    request: POST /orders?id=7\n    coroutine: 12\n" in out


def test_sarif_points_at_the_php_line(tmp_path):
    doc = json.loads(export.to_sarif([double_free_finding(tmp_path)], app_entry="server.php"))
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(doc)
    [result] = doc["runs"][0]["results"]
    loc = result["locations"][0]["physicalLocation"]
    assert loc == {"artifactLocation": {"uri": "server.php", "uriBaseId": "SRCROOT"}, "region": {"startLine": 15}}
    assert "request POST /orders?id=7" in result["message"]["text"]
    assert result["properties"]["php_stack"][1] == "remember_order() /app/server.php:15"
    assert result["properties"]["coroutine"] == 12


def test_junit_failure_starts_with_the_php_stack(tmp_path):
    root = ET.fromstring(export.to_junit([double_free_finding(tmp_path)]))
    body = root.find("testsuite/testcase/failure").text
    assert body.startswith("PHP: free()\nPHP: remember_order() /app/server.php:15\n")
    assert "request: POST /orders?id=7\ncoroutine: 12\n" in body and ERROR_LINE in body


def test_reports_without_a_block_stay_as_they_were(tmp_path):
    reports = parse(fixture_text("heap-buffer-overflow"))
    assert php_stack.attach(reports, php_stack.parse(BLOCK)) == 0
    assert all(r.php is None for r in reports)
    assert "in PHP" not in text.render(None, group(reports))


HEAP = Path(__file__).resolve().parents[1] / "fixtures" / "soak" / "php-heap.txt"


def test_heap_profiles_are_read_per_request():
    blocks = php_stack.parse_heap(HEAP.read_text())
    assert [seq for seq, _ in blocks] == [1, 2]
    top = blocks[1][1][0]
    assert top.key() == "str_repeat() < {main} /app/grow.php:8" and top.bytes == 3745562
    # A block cut short is not a profile: its missing sites would read as freed.
    assert len(php_stack.parse_heap(HEAP.read_text().rsplit("end", 1)[0])) == 1


def test_growing_php_sites_name_the_app_line():
    blocks = dict(php_stack.parse_heap(HEAP.read_text()))
    heaps = {7: [(1000, blocks[1]), (3000, blocks[2])]}
    [string, array] = soak_report.growing_php_sites(heaps, warmup=0)
    assert (string["file"], string["line"], string["function"]) == ("/app/grow.php", 8, "{main}")
    assert string["bytes_per_request"] == (3745562 - 1551026) / 2000
    assert string["path"] == "{main} /app/grow.php:8"
    assert (array["function"], array["line"]) == ("remember", 3)
    assert array["path"] == "remember() /app/grow.php:3 <- {main} /app/grow.php:8"
    text = soak_report.render({**SOAK_STUB, "growing_php_sites": [string, array]})
    assert "growing PHP allocation sites" in text and "at {main} /app/grow.php:8" in text


SOAK_STUB = {"metric_label": "x", "bytes_per_request": None, "verdict": "LEAK", "more_requests": None,
             "criteria": {"warmup": 0, "threshold": 1.0, "min_growth": 65536}, "load": None, "series": [],
             "events": [], "advice": None, "checkpoints": []}


def test_census_names_the_variables_that_grow():
    """A real census (the agent in PHP 8.2 under ASan, tests/fixtures/soak/php-census-app.php, two
    censuses 2 s apart), read as two checkpoints of a soak: each growing holder by its path."""
    blocks = php_stack.parse_census((HEAP.parent / "php-census.txt").read_text())
    assert [seq for seq, _ in blocks] == [1, 2]
    first = {h.path: h for h in blocks[0][1]}
    assert first["Registry::$seen"].kind == "static-property" and first["Registry::$other"].elements == 0
    assert first["count_visit()::static $visits"].kind == "static-var" and first["$app->names"].kind == "global"
    requests = {1: 1000, 2: 2000}
    grown = soak_report.growing_holders({20: [(requests[seq], hs) for seq, hs in blocks]}, warmup=0)
    paths = [g["path"] for g in grown]
    assert set(paths) == {"$app->cache", "$app->names", "$orders", "Registry::$seen", "count_visit()::static $visits"}
    second = {h.path: h for h in blocks[1][1]}
    seen = next(g for g in grown if g["path"] == "Registry::$seen")
    assert seen["elements_per_request"] == (second["Registry::$seen"].elements - first["Registry::$seen"].elements) / 1000
    assert seen["bytes_per_request"] == (second["Registry::$seen"].bytes - first["Registry::$seen"].bytes) / 1000
    text = soak_report.render({**SOAK_STUB, "growing_holders": grown})
    assert "growing PHP variables" in text and "Registry::$seen  (a static property, in 1 process(es))" in text


def test_a_census_cut_short_is_dropped():
    text = (HEAP.parent / "php-census.txt").read_text()
    cut = text[:text.rindex("end ")]
    assert [seq for seq, _ in php_stack.parse_census(cut)] == [1]
