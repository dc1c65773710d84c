"""LeakSanitizer suppressions applied to recorded findings, with LSan's matching rules, on a real
leak report (tests/fixtures/reports/leak.log: 348 bytes leaked through FFI)."""

from pathlib import Path

import pytest

from asanlab.reports import findings, sanitizers as reports, suppressions
from asanlab.errors import UsageError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reports"
LEAK = FIXTURES / "leak.log"


def leak_findings():
    return findings.group(reports.parse(LEAK.read_text(), "leak.log"))


@pytest.mark.parametrize("rule,hidden", [
    ("leak:zif_ffi_trampoline", True),      # a function anywhere in the stack
    ("leak:ext/ffi/ffi.c", True),           # a source file, as a substring
    ("leak:libffi.so", True),               # a module
    ("leak:^zif_ffi*oline$", True),         # anchors and a wildcard
    ("leak:^ffi.c", False),                 # anchored: the file is /usr/src/php-src/ext/ffi/ffi.c
    ("leak:some_other_function", False),
])
def test_lsan_matching_rules(rule, hidden):
    found = leak_findings()
    kept, gone = suppressions.apply(found, [rule])
    assert bool(gone) is hidden and len(kept) + len(gone) == len(found)


def test_errors_are_never_suppressed():
    found = findings.group(reports.parse((FIXTURES / "double-free.log").read_text()))
    kept, gone = suppressions.apply(found, ["leak:*"])
    assert gone == [] and kept == found


def test_bad_suppression_file_names_the_line(tmp_path):
    f = tmp_path / "app.supp"
    f.write_text("# ours\nleak:php_swoole_load_library\ninterceptor_via_fun:foo\n")
    with pytest.raises(UsageError, match=r"app.supp:3: .*expected leak:PATTERN"):
        suppressions.read([f])
    with pytest.raises(UsageError, match="No such file"):
        suppressions.read([tmp_path / "missing.supp"])


def test_report_command_hides_suppressed_leaks(tmp_path, cli):
    supp = tmp_path / "ffi.supp"
    supp.write_text("leak:zif_ffi_trampoline\n")
    plain = cli("report", LEAK)
    hidden = cli("report", LEAK, "--suppressions", supp)
    assert plain.returncode == 1 and hidden.returncode == 0
    assert "hidden by --suppressions" in hidden.stderr


def test_a_valgrind_possible_leak_is_a_leak_and_can_be_suppressed():
    from asanlab.reports.types import Frame, Report, Tool
    from asanlab.reports.findings import Category, group

    r = Report(tool=Tool.VALGRIND, kind="possible-leak", pid=1, frames=[Frame(0, "malloc"), Frame(1, "keep_name")],
               leaked_bytes=13, leaked_objects=1)
    [f] = group([r])
    assert f.tool is Tool.VALGRIND and f.category is Category.LEAK and f.is_leak
    kept, hidden = suppressions.apply([f], ["leak:keep_name"])
    assert (kept, hidden) == ([], [f])
