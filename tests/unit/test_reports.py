import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from asanlab.reports.findings import category, group, meaningful, signature
from asanlab.reports import sanitizers as reports
from asanlab.reports.sanitizers import Frame, Report, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reports"


# The keys a fixture's header may give after its REPORT line (`# KEY: value`); any other key is a
# typo that would silently check nothing. Lines of prose (`# Made by ...`) are comments.
HEADER_KEYS = {"PID", "FRAMES", "FRAME", "SIGNATURE", "ACCESS", "ALLOCATED", "FREED", "LEAKED", "DEDUP"}


def load_fixture(path: Path) -> tuple[list[dict], str]:
    """Split a fixture into its header of expected values and the verbatim sanitizer output."""
    expected: list[dict] = []
    if path.suffix == ".xml":  # XML cannot carry a '#' header: it sits beside the file
        lines = path.with_suffix(".expect").read_text().splitlines(keepends=True) + path.read_text().splitlines(True)
    else:
        lines = path.read_text().splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        key, _, value = lines[i][2:].strip().partition(": ")
        if not re.fullmatch(r"[A-Za-z_]+", key):  # prose: where the fixture came from
            i += 1
            continue
        if key == "REPORT":
            tool, kind = value.split()
            expected.append({"tool": tool, "kind": kind})
        elif key not in HEADER_KEYS or not expected:
            raise ValueError(f"{path.name}:{i + 1}: header key {key!r} is unknown here "
                             f"(REPORT first, then {', '.join(sorted(HEADER_KEYS))})")
        else:
            expected[-1][key] = value
        i += 1
    return expected, "".join(lines[i:])


ALL_FIXTURES = sorted(FIXTURES.glob("*.log")) + sorted(FIXTURES.glob("*.xml"))


def test_fixture_header_refuses_unknown_keys(tmp_path):
    bad = tmp_path / "typo.log"
    bad.write_text("# REPORT: AddressSanitizer double-free\n# SIGNATUER: x\n==1==ERROR\n")
    with pytest.raises(ValueError, match="typo.log:2: header key 'SIGNATUER'"):
        load_fixture(bad)


def test_every_kind_has_a_fixture():
    kinds = {e["kind"] for p in ALL_FIXTURES for e in load_fixture(p)[0]}
    assert {"heap-buffer-overflow", "heap-use-after-free", "stack-buffer-overflow", "global-buffer-overflow",
            "stack-use-after-return", "stack-use-after-scope", "double-free", "bad-free", "alloc-dealloc-mismatch",
            "SEGV", "stack-overflow", "memcpy-param-overlap", "container-overflow", "allocation-size-too-big",
            "calloc-overflow", "use-after-poison", "odr-violation", "direct-leak", "indirect-leak",
            "signed-integer-overflow", "shift", "invalid-read"} <= kinds


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.name)
def test_fixture(path):
    expected, text = load_fixture(path)
    assert expected, "fixture without a header"
    reports = parse(text, source=path.name)
    assert len(reports) == len(expected)
    for r, e in zip(reports, expected):
        assert (r.tool, r.kind) == (e["tool"], e["kind"])
        assert r.complete
        assert r.pid == (None if e["PID"] == "-" else int(e["PID"]))
        assert len(r.frames) == int(e["FRAMES"])
        if "ACCESS" in e:
            want = e["ACCESS"].split()
            assert r.access == (None if want == ["-"] else want[0])
            if len(want) > 1:
                assert r.size == int(want[1])
        if "ALLOCATED" in e:
            assert len(r.allocated_by) == int(e["ALLOCATED"])
            assert len(r.freed_by) == int(e["FREED"])
        if "LEAKED" in e:
            assert (r.leaked_bytes, r.leaked_objects) == tuple(map(int, e["LEAKED"].split()))
        if "DEDUP" in e:
            assert r.dedup_token == e["DEDUP"]
        top = meaningful(r.frames)[0]
        assert f"{top.function or '??'} {top.file}:{top.line}" == e["FRAME"]
        assert signature(r) == e["SIGNATURE"]
        # No address, PID or line number in a signature: they move between runs and builds.
        assert "0x" not in signature(r) and not re.search(r":\d", signature(r))


def test_every_fixture_frame_is_parsed():
    for path in FIXTURES.glob("*.log"):
        _, text = load_fixture(path)
        frame_lines = [l for l in text.splitlines() if l.strip().startswith("#") and " 0x" in l]
        # (a UBSan report without a stack gets one frame made from its file:line, index -1)
        parsed = sum(len([f for f in r.frames if f.index >= 0]) + len(r.freed_by) + len(r.allocated_by) * (r.tool != "LeakSanitizer")
                     + sum(map(len, r.other_stacks)) for r in parse(text))
        assert parsed == len(frame_lines), path.name


def fixture_text(name: str) -> str:
    return load_fixture(FIXTURES / f"{name}.log")[1]


def test_same_bug_in_many_processes_is_one_finding():
    text = fixture_text("leak")
    many = "".join(text.replace("==1==", f"=={pid}==") for pid in (7, 8, 9))
    findings = group(parse(many))
    assert [f.count for f in findings] == [3, 3]
    assert findings[0].pids == [7, 8, 9]
    assert findings[0].leaked_bytes == 3 * 348


def test_errors_sort_before_leaks():
    reports = parse(fixture_text("leak")) + parse(fixture_text("double-free"))
    assert [f.category for f in group(reports)] == ["error", "leak", "leak"]


def test_interleaved_processes_are_split_by_pid():
    a = fixture_text("heap-buffer-overflow").splitlines()
    b = fixture_text("double-free").replace("==1==", "==2==").splitlines()
    # Two processes writing to one stream: whole reports one after the other, as stderr does per write.
    reports = parse("\n".join(a + b))
    assert [(r.pid, r.kind) for r in reports] == [(1, "heap-buffer-overflow"), (2, "double-free")]


def test_truncated_report_is_kept_and_marked():
    text = fixture_text("heap-use-after-free")
    cut = text[: text.index("freed by thread")]
    [r] = parse(cut)
    assert r.kind == "heap-use-after-free" and not r.complete and len(r.frames) == 16
    leak = fixture_text("leak")
    [first] = parse(leak[: leak.index("Direct leak of 7")])
    assert first.kind == "direct-leak" and not first.complete
    assert group([r])[0].incomplete == 1


def test_startup_leaks_are_folded():
    startup = Report(tool="LeakSanitizer", kind="direct-leak", pid=8, leaked_bytes=32, leaked_objects=1,
                     frames=[Frame(0, "__interceptor_malloc", module="/opt/php/bin/php"),
                             Frame(1, "__zend_malloc", "/usr/src/php-src/Zend/zend_alloc.c", 3000),
                             Frame(2, "zend_register_functions", "/usr/src/php-src/Zend/zend_API.c", 2900),
                             Frame(3, "zend_startup_module_ex", "/usr/src/php-src/Zend/zend_API.c", 2400)])
    runtime = parse(fixture_text("leak"))[0]
    assert category(startup) == "startup-leak"
    assert category(runtime) == "leak"


def test_ubsan_runtime_error_without_stack():
    text = "/usr/src/php-src/Zend/zend_operators.c:1203:5: runtime error: signed integer overflow: 9223372036854775807 + 1 cannot be represented in type 'long'\nSUMMARY: UndefinedBehaviorSanitizer: undefined-behavior /usr/src/php-src/Zend/zend_operators.c:1203:5\n"
    [r] = parse(text)
    assert r.tool == "UndefinedBehaviorSanitizer" and r.frames[0].line == 1203
    assert r.summary.startswith("undefined-behavior")
    assert "9223372036854775807" not in signature(r)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_never_raises(text):
    assert parse(text) == parse(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0), st.sampled_from(sorted(p.stem for p in FIXTURES.glob("*.log"))))
def test_any_prefix_of_a_real_report_never_raises(cut, name):
    text = fixture_text(name)
    reports = parse(text[: cut % (len(text) + 1)])
    group(reports)


def test_binary_garbage_and_empty():
    assert parse("") == []
    assert parse("\x00\xff==12==ERROR: AddressSanitizer:\n#0 0x") != None  # noqa: E711 - no exception is the point
    [r] = parse("==12==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x1\n\x00\x01garbage")
    assert not r.complete and r.kind == "heap-buffer-overflow"


def _leak(*functions: str) -> Report:
    return Report(tool="LeakSanitizer", kind="direct-leak", pid=1, leaked_bytes=8, leaked_objects=1,
                  frames=[Frame(i, fn) for i, fn in enumerate(("__interceptor_malloc",) + functions)])


def test_swoole_server_setup_is_folded_but_request_leaks_are_not():
    setup = _leak("swoole::make_socket(int, swFdType)", "swoole::ProcessPool::create(unsigned int, int, swIPCMode)",
                  "swoole::Server::start()", "zim_swoole_server_start(_zend_execute_data*, _zval_struct*)",
                  "execute_ex")
    construct = _leak("zim_swoole_server___construct(_zend_execute_data*, _zval_struct*)", "execute_ex")
    in_request = _leak("zif_ffi_trampoline", "execute_ex", "zend_call_function",
                       "sw_zend_call_function_ex(_zval_struct*, _zend_fcall_info_cache*, unsigned int, _zval_struct*, _zval_struct*)",
                       "php_swoole_http_server_onReceive(swoole::Server*, swoole::RecvData*)",
                       "swoole::Server::start()")
    assert [category(r) for r in (setup, construct, in_request)] == ["startup-leak", "startup-leak", "leak"]


def test_infrastructure_notices_are_not_findings():
    from asanlab.reports.notices import notices

    text = ("==9==LeakSanitizer has encountered a fatal error.\n"
            "==9==HINT: For debugging, try setting environment variable LSAN_OPTIONS=verbosity=1:log_threads=1\n"
            "==9==HINT: LeakSanitizer does not work under ptrace (strace, gdb, etc)\n")
    [n] = notices(text)
    assert n.kind == "lsan-fatal" and "ptrace" in n.remedy and n.message.startswith("LeakSanitizer has")
    assert parse(text) == []
    loop = "AddressSanitizer:DEADLYSIGNAL\n" * 50
    assert [n.kind for n in notices(loop)] == ["deadlysignal-loop"]
    assert notices(fixture_text("leak")) == []


def test_reports_after_a_stack_switch_are_suspect():
    warning = ("==8==WARNING: ASan is ignoring requested __asan_handle_no_return: stack type: default top: "
               "0x7ffd1c6f2000; bottom 0x7f3b0d4fe000; size: 0x00c20f1f4000 (833001259008)\n")
    before = parse(fixture_text("double-free"))
    after = parse(warning + fixture_text("double-free"))
    assert [r.suspect for r in before] == [False] and [r.suspect for r in after] == [True]
    from asanlab.reports.notices import notices
    assert [n.kind for n in notices(warning)] == ["stack-switch"]


def test_baseline_keeps_new_and_growing_findings():
    from asanlab.reports.findings import new_since

    base = group(parse(fixture_text("leak")) + parse(fixture_text("double-free")))
    now = group(parse(fixture_text("leak")) + parse(fixture_text("double-free").replace("==1==", "==2==")) +
                parse(fixture_text("double-free")) + parse(fixture_text("heap-buffer-overflow")))
    assert sorted(f.kind for f in new_since(now, base)) == ["double-free", "heap-buffer-overflow"]
    assert new_since(base, base) == []


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.name)
def test_streaming_parse_equals_whole_parse(path):
    from asanlab.reports.sanitizers import iter_parse

    _, text = load_fixture(path)
    if path.suffix == ".xml":
        return
    noisy = "app output line\n" * 3 + text + "more output\n" + text.replace("==", "==9")
    assert [r.to_dict() for r in iter_parse(noisy.splitlines(keepends=True))] == [r.to_dict() for r in parse(noisy)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=40),
       st.lists(st.sampled_from(sorted(p.stem for p in FIXTURES.glob("*.log"))), min_size=1, max_size=5))
def test_chunked_streaming_equals_whole_parse_wherever_the_chunks_end(sizes, names):
    """A log read in pieces that end anywhere (mid-line, mid-report) parses as the whole log does."""
    from asanlab.reports.sanitizers import iter_parse_chunks

    text = "".join("app output\n" + fixture_text(n).replace("==1==", f"=={i + 2}==") for i, n in enumerate(names))
    text += "tail without a newline"
    chunks, pos = [], 0
    for size in sizes * (len(text) // sum(sizes) + 1):
        if pos >= len(text):
            break
        chunks.append(text[pos:pos + size])
        pos += size
    assert [r.to_dict() for r in iter_parse_chunks(chunks)] == [r.to_dict() for r in parse(text)]


def test_streaming_marks_reports_after_a_stack_switch():
    from asanlab.reports.sanitizers import iter_parse

    text = ("==8==WARNING: ASan is ignoring requested __asan_handle_no_return: stack type: default\n"
            + fixture_text("double-free") + fixture_text("heap-buffer-overflow"))
    assert [r.suspect for r in iter_parse(text.splitlines())] == [True, True]
    assert [r.suspect for r in iter_parse(fixture_text("double-free").splitlines())] == [False]


@pytest.mark.parametrize("message,kind", [
    ("signed integer overflow: 2147483647 + 2 cannot be represented in type 'int'", "signed-integer-overflow"),
    ("shift exponent 33 is too large for 32-bit type 'int'", "shift"),
    ("load of misaligned address 0x602000000011 for type 'int', which requires 4 byte alignment", "alignment"),
    ("null pointer passed as argument 2, which is declared to never be null", "nonnull-attribute"),
    ("member access within null pointer of type 'struct s'", "null"),
    ("applying non-zero offset 8 to null pointer", "pointer-overflow"),
    ("index 10 out of bounds for type 'int[4]'", "bounds"),
    ("load of value 7, which is not a valid value for type 'bool'", "invalid-value"),
    ("something new in a later clang", "runtime-error"),
])
def test_ubsan_kinds_from_messages(message, kind):
    assert reports.ubsan_kind(message) == kind


@pytest.mark.parametrize("line,expected", [
    ("#0 0x1 in __interceptor_malloc (/opt/php/bin/php+0x1884dfe)", "runtime"),
    ("#1 0x1 in ffi_call (/lib/x86_64-linux-gnu/libffi.so.8+0x6b0c)", "libc"),
    ("#2 0x1 in __libc_start_main csu/../csu/libc-start.c:360:3", "libc"),
    ("#3 0x1 in execute_ex /usr/src/php-src/Zend/zend_vm_execute.h:55896:7", "zend"),
    ("#4 0x1 in do_cli /usr/src/php-src/sapi/cli/php_cli.c:995:4", "zend"),
    ("#5 0x1 in zif_ffi_trampoline /usr/src/php-src/ext/ffi/ffi.c:2830:3", "php-ext"),
    ("#6 0x1 in swoole::Coroutine::run /usr/src/ext-swoole/src/coroutine/base.cc:40:5", "swoole"),
    ("#7 0x1 in zim_swoole_server_start /usr/src/ext-swoole/ext-src/swoole_server.cc:2600:9", "swoole"),
    ("#8 0x1 in zif_igbinary_serialize /usr/src/ext-igbinary/src/php7/igbinary.c:611:3", "extension"),
    ("#9 0x1 in php_igbinary_encode (/opt/php/lib/php/extensions/no-debug-non-zts-20220829/igbinary.so+0x1234)",
     "extension"),
    ("#10 0x1 in make_order /app/lib/liborders.c:12:5", "user"),
])
def test_frame_classes(line, expected):
    from asanlab.reports.findings import frame_class

    assert frame_class(reports.parse_frame(line)) == expected


def test_unwinder_garbage_does_not_split_a_leak():
    """A leak fast-unwound past libffi on two coroutine stacks: the frames after the one in no
    module differ per stack; the two reports are one finding."""
    def report(stack: str) -> str:
        return (f"==7==ERROR: LeakSanitizer: detected memory leaks\n\n"
                f"Direct leak of 100 byte(s) in 1 object(s) allocated from:\n"
                f"    #0 0x55f45a4864ce in malloc (/opt/php/bin/php+0xa864ce) (BuildId: 3647)\n"
                f"    #1 0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)\n"
                f"    #2 0x7f3c{stack}55f  (<unknown module>)\n"
                f"    #3 0x7f3c{stack}a10  (<unknown module>)\n\n"
                f"SUMMARY: AddressSanitizer: 100 byte(s) leaked in 1 allocation(s).\n")
    [f] = group(parse(report("471ff")) + parse(report("48bff")))
    assert f.count == 2 and "unknown module" not in f.signature, f.signature
    # The same on the main thread's stack: the address lies in the stack, at another offset each run.
    on_stack = [parse(report("471ff").replace("(<unknown module>)", f"([stack]+0x{n})")) for n in ("1b9bf", "2c9bf")]
    [f] = group(on_stack[0] + on_stack[1])
    assert f.count == 2 and "[stack]" not in f.signature and f.cut_short == "libffi.so.8", f.signature


def test_a_swoole_masters_set_up_closure_is_start_up():
    """A clean Swoole server's master (PHP 8.2, Swoole 6.1.9, process mode, coroutines on) reports
    the request callback's closure, made by the script before $server->start() and held by the
    server until exit: start-up, so a clean app's run exits 0. A leak the script's top level makes
    through FFI stays a leak."""
    text = (FIXTURES.parent / "swoole" / "master-set-up-closure.log").read_text()
    [r] = parse(text)
    assert any(f.function == "zend_closure_new" for f in r.frames)
    assert category(r) == "startup-leak"
    # The same top-level path, but FFI made the block: native memory the script lost.
    vm = next(i for i, f in enumerate(r.frames) if f.function == "execute_ex")
    ffi = Report(tool="LeakSanitizer", kind="direct-leak", pid=1, frames=[
        r.frames[0], Frame(index=1, function="zif_ffi_trampoline", file="/usr/src/php-src/ext/ffi/ffi.c", line=2830),
        *r.frames[vm:]])
    assert any(f.function == "php_execute_script" for f in ffi.frames) and category(ffi) == "leak"


def _lsan(*frames: str) -> Report:
    text = ("==7==ERROR: LeakSanitizer: detected memory leaks\n\n"
            "Direct leak of 100 byte(s) in 1 object(s) allocated from:\n"
            + "".join(f"    #{n} {line}\n" for n, line in enumerate(frames))
            + "\nSUMMARY: AddressSanitizer: 100 byte(s) leaked in 1 allocation(s).\n")
    [r] = parse(text)
    return r


MALLOC = "0x55f45a4864ce in malloc (/opt/php/bin/php+0xa864ce) (BuildId: 3647)"
LIBFFI = "0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)"


@pytest.mark.parametrize("frames,where", [
    # ASan's fast unwinder through FFI: libffi has no frame pointers (measured, PHP 8.2, Swoole 6.1.9)
    ((MALLOC, LIBFFI), "libffi.so.8"),
    # ... and on a coroutine stack, garbage after it
    ((MALLOC, LIBFFI, "0x7f3c471ff55f  (<unknown module>)"), "libffi.so.8"),
    # ... and on the main thread's stack (seen: PHP 8.2 script, FFI), an address in the stack itself
    ((MALLOC, LIBFFI, "0x7ffd3c1b9bf0  ([stack]+0x1b9bf)"), "libffi.so.8"),
    # whole stacks: the program's start, a thread's start, a coroutine's first frame, the frame limit
    ((MALLOC, "0x561f22003680 in _start (/opt/php/bin/php+0xa03680) (BuildId: 6214)"), None),
    ((MALLOC, "0x7f95d2245304 in __libc_start_main (/lib/x86_64-linux-gnu/libc.so.6+0x27304) (BuildId: 93ac)"), None),
    ((MALLOC, "0x7f95d2245304 in start_thread (/lib/x86_64-linux-gnu/libc.so.6+0x88fd4) (BuildId: 93ac)"), None),
    ((MALLOC, "0x7f3c4e2a1b2c in swoole::coroutine::Context::context_func(void*) "
              "/usr/src/ext-swoole/src/coroutine/context.cc:322:5"), None),
    ((MALLOC, "0x561f22a49d89 in zend_execute_scripts /usr/src/php-src/Zend/zend.c:1844:4"), None),
])
def test_a_stack_cut_short_by_the_fast_unwinder_names_the_library(frames, where):
    from asanlab.reports.findings import cut_short
    from asanlab.reports.text import render

    r = _lsan(*frames)
    assert cut_short(r.frames) == where
    [f] = group([r])
    assert f.cut_short == where and f.to_dict()["cut_short"] == where
    shown = render(None, [f])
    assert (f"the C stack stops in {where}" in shown) == (where is not None), shown


def test_an_errors_free_stack_cut_short_says_so():
    """A double free through FFI: ASan's own stack of the second free is complete (unwound when it
    happens); the first free's and the allocation's were unwound with frame pointers and stop in libffi."""
    from asanlab.reports.text import render

    text = ("==9==ERROR: AddressSanitizer: attempting double-free on 0x602000000010 in thread T0:\n"
            "    #0 0x55f45a486111 in free (/opt/php/bin/php+0xa86111) (BuildId: 3647)\n"
            "    #1 0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)\n"
            "    #2 0x561f22a49d89 in ffi_call (/lib/x86_64-linux-gnu/libffi.so.8+0x5492) (BuildId: 4b5e)\n"
            "    #3 0x561f22a49d90 in zif_ffi_trampoline /usr/src/php-src/ext/ffi/ffi.c:2830:3\n"
            "    #4 0x561f22003680 in _start (/opt/php/bin/php+0xa03680) (BuildId: 6214)\n\n"
            "0x602000000010 is located 0 bytes inside of 16-byte region [0x602000000010,0x602000000020)\n"
            "freed by thread T0 here:\n"
            "    #0 0x55f45a486111 in free (/opt/php/bin/php+0xa86111) (BuildId: 3647)\n"
            "    #1 0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)\n\n"
            "previously allocated by thread T0 here:\n"
            f"    #0 {MALLOC}\n"
            "    #1 0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)\n"
            "    #2 0x7ffd3c1b9bf0  ([stack]+0x1b9bf)\n\n"
            "SUMMARY: AddressSanitizer: double-free (/opt/php/bin/php+0xa86111) in free\n")
    [r] = parse(text)
    assert r.kind == "double-free" and r.freed_by and r.allocated_by
    [f] = group([r])
    assert f.cut_short is None  # for errors, the hint is on the stacks it concerns
    shown = render(None, [f])
    freed, allocated = shown.index("    freed by:"), shown.index("    allocated by:")
    hint = "      (the C stack stops in libffi.so.8, built without frame pointers: --full-stacks"
    assert shown.count(hint) == 2, shown
    assert freed < shown.index(hint) < allocated < shown.rindex(hint), shown


def test_a_swoole_5_reactor_threads_buffer_is_start_up():
    """A clean Swoole 5.1.8 server's master (process mode, run's fast unwinder): each reactor
    thread's message buffer, allocated once as the thread starts, is never freed at exit."""
    [r] = parse((FIXTURES.parent / "swoole" / "master-reactor-thread-buffer.log").read_text())
    assert r.leaked_bytes == 131088 and any(f.function and f.function.startswith("swoole::ReactorThread::init")
                                             for f in r.frames)
    assert category(r) == "startup-leak"


def test_a_ubsan_report_takes_its_pid_from_its_log_name(tmp_path):
    """UBSan's lines carry no pid; log_path names each process's file sanitizer.<pid>."""
    from asanlab.session import read_reports

    (tmp_path / "sanitizer.7").write_text(fixture_text("ubsan-misaligned-websocket"))
    [r] = read_reports(tmp_path)
    assert (r.tool, r.pid, r.frames[0].function) == ("UndefinedBehaviorSanitizer", 7,
                                                      "swoole::websocket::mask(char*, unsigned long, char const*)")


def test_the_session_line_says_the_exit_status_is_the_apps():
    """A STABLE soak that exited 0 said `exit code 1`: that was the app's status after SIGTERM."""
    from asanlab.reports.text import render

    stopped = render({"id": "s", "command": ["php", "/app/a.php"], "image": {"ref": "img"}, "status": "finished",
                      "stop_reason": "finished", "exit_code": 1}, [])
    assert "the app's exit status 1 (after asanlab stopped it: finished)" in stopped and "exit code" not in stopped
    exited = render({"id": "s", "command": ["php", "/app/a.php"], "image": {"ref": "img"}, "status": "finished",
                     "stop_reason": "exited", "exit_code": 0}, [])
    assert "the app's exit status 0" in exited and "stopped it" not in exited


def test_allocator_frames_of_a_stack_cut_short_are_named_not_addresses():
    """A `freed by` stack that the fast unwinder stopped in libffi (the real double-free report, its
    stack cut where frame pointers end) has only the runtime's frames left: `free` is ASan's
    interceptor linked into php, said as such instead of `free /opt/php/bin/php+0x1884b52`."""
    from asanlab.reports.findings import group
    from asanlab.reports.text import render

    lines = fixture_text("double-free").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("freed by"))
    cut = lines[:start + 5] + lines[next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("    #")):]
    text = render(None, group(parse("\n".join(cut) + "\n", source="sanitizer.1")))
    freed = text.split("freed by:")[1].split("allocated by:")[0]
    assert "#0 free (the sanitizer's allocator, in php)" in freed, freed
    assert "/opt/php/bin/php+0x" not in freed
