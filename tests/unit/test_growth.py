"""The soak's statistics on series shaped like what a soak measures: exact ASan live bytes, RSS
with ASan's quarantine filling then flat, page-sized noise, and workers restarted mid-soak."""

import random

import pytest

from asanlab.soak import growth, report as soak_report
from asanlab.soak.growth import INCONCLUSIVE, LEAK, STABLE, Criteria

X = [0, 125, 250, 500, 1000] + list(range(2125, 10001, 1125)) + list(range(21250, 100001, 11250))


def test_exact_linear_leak_is_leak_with_the_true_slope():
    v = growth.judge([(x, 4e6 + 100 * x) for x in X], Criteria(warmup=1000))
    assert v.verdict == LEAK
    assert v.fit.slope == pytest.approx(100) and v.fit.low == pytest.approx(100)


def test_quarantine_plateau_is_not_a_leak_after_warmup():
    # RSS under ASan: +160 MB over the first 10k requests while the quarantine fills, then flat
    # with page-sized noise. (last - first) / N would read it as a 1.6 kB/request leak.
    rnd = random.Random(7)
    series = [(x, 50e6 + 160e6 * min(x, 10000) / 10000 + rnd.choice([-4096, 0, 4096])) for x in X]
    naive = (series[-1][1] - series[0][1]) / series[-1][0]
    assert naive > 1000
    assert growth.judge(series, Criteria(warmup=10000)).verdict == STABLE


def test_tiny_significant_trend_is_not_a_leak():
    # 0.1 B/request, perfectly regular: significant, but under the effect-size threshold.
    v = growth.judge([(x, 1e6 + 0.1 * x) for x in X], Criteria(warmup=1000))
    assert v.verdict == STABLE and v.fit.low > 0


def test_small_total_growth_is_inconclusive_and_says_how_many_more():
    # 5 B/request over 9k requests = 45 kB: a real trend, under the 64 KiB minimum.
    xs = [1000 + 1000 * i for i in range(10)]
    v = growth.judge([(x, 1e6 + 5 * x) for x in xs], Criteria(warmup=1000))
    assert v.verdict == INCONCLUSIVE
    assert v.more_requests == pytest.approx((64 * 1024 - 45000) / 5, abs=1)


def test_noisy_series_is_inconclusive_with_an_estimate():
    rnd = random.Random(3)
    xs = list(range(1000, 20001, 2000))
    v = growth.judge([(x, 1e6 + 1.5 * x + rnd.gauss(0, 30000)) for x in xs], Criteria(warmup=1000))
    assert v.verdict == INCONCLUSIVE and v.more_requests and v.more_requests > 0


def test_too_few_samples():
    assert growth.judge([(1000, 1.0), (2000, 2.0)], Criteria()).verdict == INCONCLUSIVE


def test_outlier_sample_does_not_make_a_leak():
    pts = [(x, 1e6) for x in X]
    pts[10] = (pts[10][0], 1e6 + 50e6)  # one sample caught a transient 50 MB buffer
    assert growth.judge(pts, Criteria(warmup=1000)).verdict == STABLE


def _sample(requests, procs, checkpoint=False):
    return {"requests": requests, "time": 0.0, "checkpoint": checkpoint, "cgroup": None,
            "processes": {str(pid): {"pid": pid, "ppid": ppid, "role": role, "allocated": value}
                          for pid, ppid, role, value in procs}}


def test_worker_restart_starts_a_new_series_and_is_said():
    samples = []
    for x in X:
        procs = [(1, 0, "master", 2e6)]
        if x <= 30000:  # worker 2 leaks 50 B per request of the whole server, then is replaced
            procs.append((2, 1, "worker", 3e6 + 50 * x))
        else:
            procs.append((7, 1, "worker", 3e6 + 50 * (x - 30000)))
        procs.append((3, 1, "worker", 3e6 + 50 * x))
        samples.append(_sample(x, procs, checkpoint=x in (1000, 10000, 100000)))
    a = soak_report.analyse(samples, {}, Criteria(warmup=1000))
    assert a["verdict"] == LEAK
    by_pid = {s["pid"]: s for s in a["series"]}
    assert not by_pid[2]["alive"] and by_pid[7]["alive"] and by_pid[2]["verdict"] == LEAK
    assert any("pid 7 appeared" in e for e in a["events"]) and any("pid 2 was gone" in e for e in a["events"])
    assert a["bytes_per_request"] == pytest.approx(100)  # the two live workers
    assert [r["requests"] for r in a["checkpoints"]] == [0, 1000, 10000, 100000]
    assert a["advice"]["per_worker_request"] == pytest.approx(100)
    text = soak_report.render(a)
    assert "soak: LEAK, 100.0 B/request" in text and "max_request <=" in text


def test_stable_server_is_stable_overall():
    samples = [_sample(x, [(1, 0, "server", 5e6 + (x % 3) * 8)], checkpoint=x in (1000, 100000)) for x in X]
    a = soak_report.analyse(samples, {}, Criteria(warmup=1000))
    assert a["verdict"] == STABLE
    assert a["per_million"] == pytest.approx(0, abs=1e6 * 0.1)


def test_plots_draw_every_process(tmp_path):
    from asanlab.soak import plot

    samples = [_sample(x, [(1, 0, "master", 2e6), (2, 1, "worker", 3e6 + 100 * x)], checkpoint=x in (1000, 100000))
               for x in X]
    a = soak_report.analyse(samples, {}, Criteria(warmup=1000))
    chart = plot.terminal(samples, a, width=80, height=16)
    assert "worker 2" in chart and "master 1" in chart and "requests" in chart
    png = plot.png(samples, a, tmp_path / "m.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_coloured_output_on_a_terminal(capsys):
    from rich.console import Console

    from asanlab.cli import printing

    console = Console(force_terminal=True, color_system="standard", width=120)
    old, printing.out = printing.out, console
    try:
        printing._print_coloured("1 finding(s): 1 error\n\n[1] ERROR double-free  x1 in pid 7\n    * #4 zif_ffi_trampoline\n")
    finally:
        printing.out = old
    text = capsys.readouterr().out
    assert "\x1b[1;31m[1] ERROR" in text and "double-free" in text


def test_a_soak_whose_requests_failed_is_not_stable():
    """A server that answered 500 to most requests measured nothing per request: INCONCLUSIVE,
    said with the numbers, whatever the memory series look like."""
    samples = [_sample(x, [(1, 0, "server", 5e6)], checkpoint=x in (1000, 100000)) for x in X]
    load = {"sent": 100000, "ok": 20000, "failed": 80000, "seconds": 10.0, "statuses": {"500": 80000}}
    a = soak_report.analyse(samples, {}, Criteria(warmup=1000), load=load)
    assert a["verdict"] == INCONCLUSIVE and a["failed_requests"].startswith("80000 of 100000 requests failed")
    assert "warning: 80000 of 100000 requests failed (80%" in soak_report.render(a)
    ok = soak_report.analyse(samples, {}, Criteria(warmup=1000), load={**load, "ok": 99000, "failed": 1000})
    assert ok["verdict"] == STABLE and ok["failed_requests"] is None


def test_descriptors_and_coroutines_growing_per_request_are_leaks():
    """A worker that keeps one more file open every 2 requests, and one more coroutine every 4:
    LEAK with the file's pattern, though its memory is flat."""
    samples = []
    for x in X:
        s = _sample(x, [(1, 0, "master", 2e6), (2, 1, "worker", 3e6)], checkpoint=x in (1000, 100000))
        s["processes"]["1"].update(fds=12, fd_kinds={"pipe": 6, "tcp socket": 6}, fd_sites={"pipe": 6})
        s["processes"]["2"].update(fds=10 + x // 2, fd_kinds={"file": x // 2, "pipe": 10},
                                   fd_sites={"/tmp/req-*.log": x // 2, "pipe": 10}, coroutines=1 + x // 4)
        samples.append(s)
    a = soak_report.analyse(samples, {}, Criteria(warmup=1000))
    assert a["verdict"] == LEAK
    fds = {s["pid"]: s for s in a["descriptors"]["series"]}
    assert fds[2]["verdict"] == LEAK and fds[2]["fit"]["slope"] == pytest.approx(0.5) and fds[1]["verdict"] == STABLE
    assert a["descriptors"]["growing"][0]["site"] == "/tmp/req-*.log"
    assert a["descriptors"]["growing"][0]["per_request"] == pytest.approx(0.5, rel=0.01)
    assert [s["verdict"] for s in a["coroutines"]["series"]] == [LEAK]
    text = soak_report.render(a)
    assert "open file descriptors: LEAK" in text and "0.500 fds/request  /tmp/req-*.log" in text
    assert "Swoole coroutines alive: LEAK" in text


def test_a_process_that_stops_answering_is_said_not_zeroed():
    """From 50,000 requests the worker is in /proc but its agent is silent: the table's cells are
    unknown, the event names its last reading, and it is not called gone."""
    samples = []
    for x in X:
        s = _sample(x, [(1, 0, "master", 2e6), (2, 1, "worker", 3e6 + 10 * x)], checkpoint=x in (1000, 10000, 100000))
        if x >= 50000:
            del s["processes"]["2"]["allocated"]
            s["processes"]["2"]["answered"] = False
            s["processes"]["2"]["fds"] = 1024
        samples.append(s)
    a = soak_report.analyse(samples, {}, Criteria(warmup=1000))
    worker = next(s for s in a["series"] if s["pid"] == 2)
    assert worker["alive"] and worker["stopped_answering"] == 55000 and worker["verdict"] == LEAK
    assert a["checkpoints"][-1]["total"] is None and a["checkpoints"][-1]["by_role"] == {"master": 2000000, "worker": None}
    assert a["checkpoints"][-2]["total"] == 2e6 + 3e6 + 10 * 10000
    [event] = [e for e in a["events"] if "stopped answering" in e]
    assert "at 55000 requests" in event and "last reading" in event and "1024 open file descriptors" in event
    text = soak_report.render(a)
    assert "(stopped answering at 55000 requests)" in text and "(gone)" not in text
    assert "  100000  1.9 MiB        ?        ?" in text


def test_what_attribution_could_not_do_is_said():
    samples = [_sample(x, [(1, 0, "server", 5e6)], checkpoint=x in (1000, 100000)) for x in X]
    without = soak_report.analyse(samples, {}, Criteria(warmup=1000), agent=False)
    assert without["verdict"] == STABLE and len(without["not_measured"]) == 1
    assert "not measured: the image has no asanlab agent" in soak_report.render(without)
    bare = soak_report.analyse(samples, {}, Criteria(warmup=1000))
    assert [w.split(":")[0] for w in bare["not_measured"]] == ["PHP allocation sites", "PHP variables",
                                                               "Swoole coroutines"]
