"""The PHP side of sanitizer reports (asanlab/reports/php_stack.py): the agent's blocks matched to their
reports by the ERROR line, and shown in text, JSON, SARIF and JUnit."""

import json
from pathlib import Path
import xml.etree.ElementTree as ET

import jsonschema

from asanlab.reports import export, php_stack, text
from asanlab.soak import report as soak_report
from asanlab.reports.findings import group
from asanlab.reports.sanitizers import Report, parse

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


# A LeakSanitizer leak as `run` has it printed (report_objects=1), and the agent's php-origin.<pid>
# of that process: two of the three leaked objects were allocated by the handler's FFI call.
LEAK_WITH_OBJECTS = """==7==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 300 byte(s) in 3 object(s) allocated from:
    #0 0x55d0 in malloc (/usr/bin/php+0x1)
    #1 0x7f00 in zif_ffi_trampoline /usr/src/php/ext/ffi/ffi.c:2900:3

Objects leaked above:
0x60b000001000 (100 bytes)
0x60b000002000 (100 bytes)
0x60b000003000 (100 bytes)

SUMMARY: AddressSanitizer: 300 byte(s) leaked in 3 allocation(s).
"""
ORIGINS = """origin 7 3 0
site 0
frame {main}\t/app/server.php\t21
site 1
frame malloc\t\t0
frame {closure}\t/app/server.php\t9
frame Swoole\\Http\\Server::start\t\t0
frame {main}\t/app/server.php\t21
block 0x60b000001000 1
block 0x60b000002000 1
block 0x60b000003000 0
block 0x60b0000ffff0 7
end
"""


def test_a_leak_names_the_php_code_that_allocated_most_of_its_objects(tmp_path):
    [leak] = parse(LEAK_WITH_OBJECTS)
    assert leak.objects == ["0x60b000001000", "0x60b000002000", "0x60b000003000"]
    folder = tmp_path / "php"
    folder.mkdir()
    (folder / "php-origin.7").write_text(ORIGINS)
    (folder / "php-origin.x").write_text(ORIGINS)  # not a PID: ignored
    origins = php_stack.read_origins(folder)
    assert set(origins) == {7} and len(origins[7]) == 3  # a block of an unknown site is dropped
    assert php_stack.attach_origins([leak], origins) == 1
    assert leak.php.app_frame() == php_stack.PhpFrame("{closure}", "/app/server.php", 9)
    assert (leak.php.allocated_objects, leak.php.listed_objects) == (2, 3)
    [f] = group([leak])
    out = text.render(None, [f])
    assert ("    allocated in PHP: {closure}() /app/server.php:9 <- Swoole\\Http\\Server::start() <- "
            "{main} /app/server.php:21  (2 of 3 objects)") in out
    doc = json.loads(export.to_sarif([f], app_entry="server.php"))
    [result] = doc["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"] == {"startLine": 9}
    assert "allocated in PHP: {closure}() /app/server.php:9" in result["message"]["text"]
    assert result["properties"]["php_allocated"] == {"objects": 2, "of_listed": 3}
    body = ET.fromstring(export.to_junit([f])).find("testsuite/testcase/failure").text
    assert body.startswith("allocated in PHP: malloc()\nallocated in PHP: {closure}() /app/server.php:9\n")
    # The addresses are read again from the raw log; the JSON output does not carry them.
    assert "objects" not in f.example.to_dict()


def test_a_leak_of_another_process_or_without_origins_stays_c_only():
    [leak] = parse(LEAK_WITH_OBJECTS)
    assert php_stack.attach_origins([leak], {8: php_stack.parse_origins(ORIGINS)}) == 0
    assert php_stack.attach_origins([leak], {}) == 0
    assert leak.php is None


def test_an_origin_dump_cut_short_keeps_its_blocks():
    cut = ORIGINS[:ORIGINS.index("block 0x60b000003000")]
    assert len(php_stack.parse_origins(cut)) == 2
    # A later process with the same PID numbers its sites afresh.
    again = php_stack.parse_origins(ORIGINS + "origin 7 1 0\nsite 0\nframe f\t/app/b.php\t3\nblock 0x10 0\nend\n")
    assert again[0x10] == (php_stack.PhpFrame("f", "/app/b.php", 3),)
    assert again[0x60b000003000] == (php_stack.PhpFrame("{main}", "/app/server.php", 21),)


def test_the_agents_own_memory_is_set_against_the_live_heap():
    text = "heap 1 95 0 16384 90112\nsite 1 1.0\nend\nheap 2 96 0 16384 114688\nend\nheap 3 1 0 16384\nend\n"
    assert php_stack.parse_heap_bookkeeping(text) == [(1, 90112), (2, 114688)]  # an older agent's line: none
    mem = soak_report.agent_memory({7: [(1000, 90112), (3000, 114688)], 8: [(3000, 65536)]},
                                   {7: [(1000, 4e6), (3000, 5e6)], 8: [(3000, 1e7)], 9: [(3000, 1.0)]})
    assert mem == {"pid": 7, "bytes": 114688, "live_heap": 5e6, "share": 114688 / 5e6}
    text = soak_report.render({**SOAK_STUB, "agent_memory": mem})
    assert "asanlab's agent kept 112.0 KiB for sampling, 2.3% of the live heap" in text
    assert soak_report.agent_memory({7: [(1000, 90112)]}, {}) is None  # no live heap measured then


def test_a_real_leak_is_joined_with_the_real_origins():
    """tests/fixtures/origins: a script leaking 100 bytes 5 times through FFI from leak() (line 4,
    called at line 8), run under ASan with the agent; LeakSanitizer's output and the agent's dump."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "origins"
    [leak] = parse((folder / "sanitizer.1").read_text())
    assert len(leak.objects) == 5
    assert php_stack.attach_origins([leak], php_stack.read_origins(folder)) == 1
    assert [str(f) for f in leak.php.frames] == ["malloc()", "leak() /t/leak.php:4", "{main} /t/leak.php:8"]
    assert (leak.php.allocated_objects, leak.php.listed_objects) == (5, 5)


CUT_LEAK = """==7==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 64 byte(s) in 2 object(s) allocated from:
    #0 0x55d0 in malloc (/opt/php/bin/php+0x1)
    #1 0x7f10 in CRYPTO_zalloc (/lib/x86_64-linux-gnu/libcrypto.so.3+0x1c0b8c)

Objects leaked above:
0x602000000010 (32 bytes)
0x602000000030 (32 bytes)

SUMMARY: AddressSanitizer: 64 byte(s) leaked in 2 allocation(s).
"""


def test_a_leak_allocated_while_no_php_code_ran_is_start_up_whatever_its_stack():
    """ASan's fast unwinder stops in a library without frame pointers (here libcrypto, at an
    extension's start-up): the C stack names no start-up function. The agent saw both objects
    allocated while no PHP code ran (its site with no frame): a start-up leak."""
    from asanlab.reports.findings import Category, category

    [leak] = parse(CUT_LEAK)
    assert category(leak) is Category.LEAK  # the C stack alone
    origins = "origin 7 2 0\nsite 0\nsite 1\nframe {main}\t/app/server.php\t3\nblock 0x602000000010 0\n"
    assert php_stack.attach_origins([leak], {7: php_stack.parse_origins(origins + "block 0x602000000030 0\nend\n")}) == 0
    assert leak.allocated_outside_php == 2 and leak.php is None
    assert category(leak) is Category.STARTUP_LEAK
    # One object allocated by PHP code: not all start-up, so a leak, named by that code.
    [leak] = parse(CUT_LEAK)
    assert php_stack.attach_origins([leak], {7: php_stack.parse_origins(origins + "block 0x602000000030 1\nend\n")}) == 1
    assert leak.allocated_outside_php == 1 and str(leak.php.frames[0]) == "{main} /app/server.php:3"
    assert category(leak) is Category.LEAK


def test_what_the_origin_table_kept_is_set_against_the_live_heap(tmp_path):
    from asanlab.run.session_end import origins_cost

    (tmp_path / "php-origin.7").write_text("origin 7 10 0 81920 4194304\nsite 0\nend\n")
    (tmp_path / "php-origin.8").write_text("origin 8 10 0 81920 16777216\nend\n")
    (tmp_path / "php-origin.9").write_text("origin 9 3 0\nend\n")  # an older agent: no figures
    kept = php_stack.origin_bookkeeping(tmp_path)
    assert [(k["pid"], k["share"]) for k in kept] == [(7, 81920 / 4194304), (8, 81920 / 16777216)]
    cost = origins_cost(kept)
    assert (cost["pid"], cost["processes"]) == (7, 2)
    out = text.render({"id": "s", "command": ["php", "/app/a.php"], "php_origins": cost}, [])
    assert "naming leaks' PHP lines took 80 KiB in pid 7, 2.0% of its largest live heap (4.0 MiB), the most of 2" in out


UBSAN = """/usr/src/php-src/ext/ffi/ffi.c:772:4: runtime error: store to misaligned address 0x6020000021b1 for type 'int32_t' (aka 'int'), which requires 4 byte alignment
0x6020000021b1: note: pointer points here
 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00 00
              ^
    #0 0x55e1 in zend_ffi_zval_to_cdata /usr/src/php-src/ext/ffi/ffi.c:772:4
    #1 0x55e2 in zend_ffi_cdata_write_dim /usr/src/php-src/ext/ffi/ffi.c:1420:2
SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior /usr/src/php-src/ext/ffi/ffi.c:772:4 in
"""


def test_a_ubsan_report_gets_the_php_stack_its_process_wrote_as_it_died():
    """UBSan (built without recovery) ends the process; the agent's death callback wrote the PHP
    stack as "death <pid>", and the pid is the log's (UBSan's report names none)."""
    [r] = parse(UBSAN, "sanitizer.77")
    stacks = php_stack.parse("report death 77\nframe misalign\t/app/app.php\t4\nframe {main}\t/app/app.php\t7\nend\n"
                             "report death 78\nframe other\t/app/b.php\t1\nend\n")
    assert php_stack.attach([r], stacks) == 1
    assert r.php.path() == "misalign() /app/app.php:4 <- {main} /app/app.php:7"
    [other] = parse(UBSAN, "sanitizer.79")  # no block from its process: C only
    assert php_stack.attach([other], stacks) == 0 and other.php is None


FAST_FFI_LEAK = """==7==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 340 byte(s) in 4 object(s) allocated from:
    #0 0x55d0 in malloc (/opt/php/bin/php+0xa864ce)
    #1 0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79)

Objects leaked above:
0x60b000001000 (100 bytes)
0x60b000002000 (100 bytes)
0x60b000003000 (40 bytes)
0x60b000004000 (100 bytes)

SUMMARY: AddressSanitizer: 340 byte(s) leaked in 4 allocation(s).
"""
TWO_SITES = """origin 7 4 0
site 0
frame malloc\t\t0
frame remember\t/app/server.php\t15
frame {main}\t/app/server.php\t21
site 1
frame malloc\t\t0
frame {closure}\t/app/server.php\t9
frame {main}\t/app/server.php\t21
site 2
block 0x60b000001000 1
block 0x60b000002000 0
block 0x60b000003000 1
block 0x60b000004000 2
end
"""


def test_a_leak_cut_short_in_libffi_is_one_finding_per_php_site():
    """LeakSanitizer groups leaks by stack, and ASan's fast unwinder stops every FFI call's stack
    in libffi: the agent's origins tell the PHP sites apart, with exact bytes and counts."""
    from asanlab.reports.findings import cut_short

    origins = {7: php_stack.parse_origins(TWO_SITES)}
    reports = php_stack.split_by_origin(parse(FAST_FFI_LEAK), origins, lambda r: cut_short(r.frames) is not None)
    php_stack.attach_origins(reports, origins)
    findings = group(reports)
    assert [(f.leaked_bytes, f.leaked_objects, str(f.example.php.app_frame())) for f in findings] == \
        [(240, 3, "{closure}() /app/server.php:9"), (100, 1, "remember() /app/server.php:15")]
    assert [f.signature for f in findings] == ["leak | malloc | libffi.so.8+0x6f79 | php {closure} server.php",
                                               "leak | malloc | libffi.so.8+0x6f79 | php remember server.php"]
    # The object allocated while no PHP code ran went with the larger part, which is no start-up leak.
    assert findings[0].example.allocated_outside_php == 1 and findings[0].category == "leak"
    # A whole C stack names the bug itself: not split.
    [whole] = php_stack.split_by_origin(parse(FAST_FFI_LEAK), origins, lambda r: False)
    assert whole.leaked_objects == 4


def test_a_stack_that_reached_main_is_whole_even_when_libcs_start_code_follows_unsymbolized():
    """A plain script's stack ends `main` <- libc.so.6+0x... (libc's start-up code): the hint "the C
    stack stops in libc.so.6" was false there; a stack that stops in libc elsewhere keeps it."""
    from asanlab.reports.findings import cut_short
    from asanlab.reports.types import Frame

    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    whole = [Frame(0, "malloc", module="/opt/php/bin/php"), Frame(1, "zif_str_repeat", module="/opt/php/bin/php"),
             Frame(2, "main", module="/opt/php/bin/php"), Frame(3, None, module=libc, offset="0x271ca"),
             Frame(4, None, module=libc, offset="0x27285")]
    assert cut_short(whole) is None
    stopped = [Frame(0, "malloc", module="/opt/php/bin/php"), Frame(1, None, module=libc, offset="0x9a1b2")]
    assert cut_short(stopped) == "libc.so.6"
