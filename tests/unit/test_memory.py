"""Parsing what a soak measures, on real output: the /proc sampler and ASan live-heap profiles."""

import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from asanlab.soak import memory, driver as soak
from asanlab.reports import sanitizers as reports
from asanlab.reports.sanitizers import Frame

FIXTURES = Path(__file__).parent.parent / "fixtures" / "soak"


def test_snapshot_from_proc():
    snap = memory.parse_snapshot((FIXTURES / "snapshot.txt").read_text())
    assert sorted(snap.processes) == [7, 9]
    parent, child = snap.processes[7], snap.processes[9]
    assert (parent.role, child.role) == ("master", "worker") and child.ppid == 7
    # USS is private clean + dirty, so the child's copy-on-write pages shared with its parent are not its own.
    assert child.uss == (60 + 44) * 1024 and parent.uss == (39908 + 44) * 1024
    assert child.pss == 14160 * 1024 and child.rss_anon == 26732 * 1024 and child.rss == 28404 * 1024
    assert "pcntl_fork" in parent.cmdline
    assert snap.cgroup == 99020800


def test_roles_of_a_swoole_tree():
    procs = {p: memory.Process(pid=p, ppid=pp) for p, pp in [(1, 0), (5, 1), (7, 5), (8, 5), (9, 5)]}
    memory.assign_roles(procs)
    assert [procs[p].role for p in (1, 5, 7, 8, 9)] == ["master", "manager", "worker", "worker", "worker"]
    single = {1: memory.Process(pid=1, ppid=0)}
    memory.assign_roles(single)
    assert single[1].role == "server"


def test_profiles_from_a_real_worker_log():
    text = (FIXTURES / "worker-profiles.log").read_text()
    expected = dict(re.findall(r"(FFI_BYTES|FFI_COUNT) (\S+)", text))
    profiles = memory.parse_profiles(text)
    assert len(profiles) == 2
    ffi = [[c for c in p.contexts if any(f.function == "zif_ffi_trampoline" for f in c.frames)] for p in profiles]
    assert [c[0].bytes for c in ffi] == [int(x) for x in expected["FFI_BYTES"].split(",")]
    assert [c[0].count for c in ffi] == [int(x) for x in expected["FFI_COUNT"].split(",")]
    assert profiles[0].live_bytes == 1945432 and profiles[0].live_chunks == 11010
    assert ffi[0][0].key() == ffi[1][0].key()  # same site, same key, whatever the addresses
    assert memory.site(ffi[1][0].frames).startswith("__interceptor_malloc <- zif_ffi_trampoline")
    # The profiles are not findings: the log's only report is the exit-time leak.
    found = reports.parse(text)
    assert [r.kind for r in found] == ["direct-leak"] and found[0].leaked_bytes == 1216200


def test_growing_sites_rank_by_bytes_per_request():
    from asanlab.soak.report import growing_sites

    profiles = memory.parse_profiles((FIXTURES / "worker-profiles.log").read_text())
    sites = growing_sites({10: [(1000, profiles[0]), (20000, profiles[1])]}, warmup=1000)
    top = sites[0]
    assert top["bytes_per_request"] == pytest.approx((1216200 - 62400) / 19000)
    assert top["allocations_per_request"] == pytest.approx((12162 - 624) / 19000)
    assert "zif_ffi_trampoline" in top["site"]


def frames(*names):
    return [Frame(i, function=n) for i, n in enumerate(names)]


@pytest.mark.parametrize("names,expected", [
    # A prefork server: the FFI call runs in the script itself (tests/fixtures/soak/worker-profiles.log).
    (("__interceptor_malloc", None, "ffi_call", "zif_ffi_trampoline", "execute_ex", "php_execute_script", "main"),
     "an FFI call ($ffi->func()) in code the script runs itself (no Swoole callback) of /app/server.php"),
    # Swoole, coroutines off: the handler is called from the request callback, under $server->start().
    (("malloc", "_estrndup", "zif_str_repeat", "execute_ex", "zend_call_function",
      "php_swoole_http_server_onReceive(swoole::Server*, swoole::RecvData*)", "zim_swoole_server_start",
      "php_execute_script"),
     "str_repeat() in the HTTP request handler ($server->on('request')) of /app/server.php"),
    # Coroutines on: the coroutine's own stack starts at Swoole's coroutine entry.
    (("malloc", "zim_Swoole_Http_Response___construct", "execute_ex", "swoole::PHPCoroutine::main_func(void*)"),
     "Swoole\\Http\\Response::__construct() in a coroutine (Swoole runs each request handler in one with "
     "enable_coroutine) of /app/server.php"),
    # Swoole's own C code allocating while it serves a request: the only PHP method on the stack is
    # the script's $server->start(), further out than the request callback; it made nothing.
    (("malloc", "zend_hash_do_resize", "swoole::http_server::parse(swoole::RecvData*)",
      "php_swoole_http_server_onReceive(swoole::Server*, swoole::RecvData*)", "swoole::Server::start()",
      "zim_swoole_server_start(_zend_execute_data*, _zval_struct*)", "execute_ex", "php_execute_script"),
     "C code with no PHP call of the app's in the HTTP request handler ($server->on('request')) of /app/server.php"),
    # ... and while the server starts, before any callback: start() itself, said as PHP names it.
    (("malloc", "zend_hash_do_resize", "swoole::Server::create()",
      "zim_swoole_server_start(_zend_execute_data*, _zval_struct*)", "execute_ex", "php_execute_script"),
     "Swoole\\Server::start() in code the script runs itself (no Swoole callback) of /app/server.php"),
    (("malloc", "zend_string_alloc", "zend_hash_rehash"), None),
])
def test_php_context_from_c_frames(names, expected):
    assert memory.php_context(frames(*names), "/app/server.php") == expected


def test_php_context_of_the_recorded_profile():
    profiles = memory.parse_profiles((FIXTURES / "worker-profiles.log").read_text())
    ffi = next(c for c in profiles[1].contexts if any(f.function == "zif_ffi_trampoline" for f in c.frames))
    assert memory.php_context(ffi.frames) == "an FFI call ($ffi->func()) in code the script runs itself (no Swoole callback)"


def test_answers_carry_swoole_role_when_the_agent_knows_it():
    # 7 fields: the agent found swoole_get_worker_type (Swoole >= 6.1); 6 fields: older sessions.
    text = "7 20 12 4096 8192 0 4\n7 21 12 4096 8192 0 2\n7 22 12 4096 8192 0 0\n7 23 12 4096 8192 0\n"
    got = {a.pid: a.role for a in memory.parse_answers(text)}
    assert got == {20: "task worker", 21: "worker", 22: None, 23: None}


def test_answers_skip_torn_lines():
    text = "3 8 1 2033028 175374336 0\n4 8 1 2615428\n5 8 1 2615500 344850432 1\n"
    answers = memory.parse_answers(text)
    assert [(a.seq, a.allocated, a.profiled) for a in answers] == [(3, 2033028, False), (5, 2615500, True)]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parsers_never_raise(text):
    memory.parse_snapshot(text)
    memory.parse_profiles(text)
    memory.parse_answers(text)


def test_schedule_and_checkpoints():
    assert soak.parse_checkpoints("1000,10k,100_000") == [1000, 10000, 100000]
    for bad in ("", "10,5", "0,5", "a,b", "5,5"):
        with pytest.raises(Exception, match="--checkpoints"):
            soak.parse_checkpoints(bad)
    plan = soak.schedule([1000, 10000], 4)
    assert plan == [(250, False), (500, False), (750, False), (1000, True), (3250, False), (5500, False),
                    (7750, False), (10000, True)]


def test_frames_in_no_module_end_a_stack():
    """The fast unwinder through libffi on a coroutine stack: the frame after libffi is garbage,
    different on each coroutine stack. Cut there, the two contexts are one site."""
    text = "".join(f"""Live Heap Allocations: 2000 bytes in 20 chunks; quarantined: 0 bytes in 0 chunks; 0 other chunks; total chunks: 20; showing top 100% (at most 500 unique contexts)
{n}00 byte(s) (50%) in {n} allocation(s)
    #0 0x55f45a4864ce in malloc (/opt/php/bin/php+0xa864ce) (BuildId: 3647)
    #1 0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)
    #2 0x7f3c{stack}55f  (<unknown module>)
    #3 0x7f3c4e293f79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)

""" for n, stack in ((3, "471ff"), (5, "48bff")))
    profiles = memory.parse_profiles(text)
    keys = {c.key() for p in profiles for c in p.contexts}
    assert len(keys) == 1 and all(len(c.frames) == 2 and c.cut for p in profiles for c in p.contexts)


def test_a_real_swoole_start_allocation_is_not_a_php_call_in_a_handler():
    """A worker's live-heap context allocated by Swoole's C++ code under `$server->start()` while the
    server started (tests/fixtures/soak/swoole-start-profile.log, verbatim): no C++ signature shown as
    a PHP call, start() named as PHP names it, and no handler claimed as its context."""
    profiles = memory.parse_profiles((FIXTURES / "swoole-start-profile.log").read_text())
    [context] = [c for p in profiles for c in p.contexts
                 if any("zim_swoole_server_start" in (f.function or "") for f in c.frames)]
    said = memory.php_context(context.frames, "/app/server.php")
    assert said == "Swoole\\Server::start() in code the script runs itself (no Swoole callback) of /app/server.php"
    assert "(_zend_execute_data*" not in said
