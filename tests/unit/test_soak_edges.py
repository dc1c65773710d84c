"""A soak at the edge of a resource: a Swoole server (process mode, coroutines on, two workers) that
leaks one descriptor per request until EMFILE. The fixture is a real session's samples, load and the
head of its output (tests/fixtures/soak/emfile: `asanlab soak` on the built-in default image of a
server that opens /tmp/request-PID.log per request and keeps it, each worker at 1,024 descriptors,
checkpoints 500,1500,4000)."""

import json
from pathlib import Path

from asanlab.soak import plot, report
from asanlab.soak.counts import out_of_descriptors
from asanlab.soak.growth import Criteria

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "soak" / "emfile"


def analysis(**kw):
    samples = [json.loads(line) for line in (FIXTURE / "samples.jsonl").read_text().splitlines()]
    load = json.loads((FIXTURE / "load.json").read_text())
    emfile = out_of_descriptors((FIXTURE / "output.log").read_text().splitlines())
    criteria = Criteria(threshold=1.0, min_growth=65536, warmup=500)
    return samples, report.analyse(samples, {}, criteria, load=load, emfile=emfile, app="/app/server.php", **kw)


def test_the_app_output_names_where_descriptors_ran_out():
    found = out_of_descriptors((FIXTURE / "output.log").read_text().splitlines())
    assert found["where"] == "fopen() at /app/server.php:12" and found["count"] >= 1
    assert out_of_descriptors(["PHP Warning: something else", ""]) is None


def test_the_headline_names_the_descriptor_rate_and_the_path():
    _, a = analysis()
    head = report.render(a).splitlines()[0]
    assert head.startswith("soak: LEAK, 0.99 open file descriptors/request (/tmp/request-*.log), memory "), head
    [rate] = a["resource_rates"]
    assert 0.9 <= rate["per_request"] <= 1.05 and rate["site"] == "/tmp/request-*.log"


def test_out_of_descriptors_is_said_once_and_no_process_is_gone():
    _, a = analysis()
    text = report.render(a)
    assert text.count("alive, out of descriptors (EMFILE from fopen() at /app/server.php:12") == 1, text
    assert "gone" not in text and "stopped answering" not in text
    assert "the app was out of descriptors" in text  # why so many requests failed


def test_a_sampler_that_lists_nothing_is_not_every_process_gone():
    """The last samples listing no process (the sampler failed) leave the processes alive."""
    samples, _ = analysis()
    broken = samples + [{**samples[-1], "requests": samples[-1]["requests"] + 100, "processes": {}, "running": True}]
    a = report.analyse(broken, {}, Criteria(threshold=1.0, min_growth=65536, warmup=500))
    text = report.render(a)
    assert "gone" not in text and all(s["alive"] for s in a["series"])
    assert "the last 1 sample(s) listed no process (the sampler failed" in text


def test_a_server_that_really_exited_is_still_gone():
    """The same empty sample taken after the container exited: every process is gone, as it is."""
    samples, _ = analysis()
    died = samples + [{**samples[-1], "requests": samples[-1]["requests"] + 100, "processes": {}, "running": False}]
    a = report.analyse(died, {}, Criteria(threshold=1.0, min_growth=65536, warmup=500))
    text = report.render(a)
    assert not any(s["alive"] for s in a["series"]) and "sampler failed" not in text
    assert text.count("was gone after 4000 requests") == 4


def test_a_server_caught_shutting_down_is_gone_not_the_sampler():
    """An empty sample taken while the container was still shutting down (running, no process left),
    in a soak that ended because the app exited: the processes are gone; the sampler is not blamed."""
    samples, _ = analysis()
    ending = samples + [{**samples[-1], "requests": samples[-1]["requests"] + 100, "processes": {}, "running": True}]
    load = {"sent": 4100, "failed": 0, "app_exited_after": 4100}
    a = report.analyse(ending, {}, Criteria(threshold=1.0, min_growth=65536, warmup=500), load=load)
    text = report.render(a)
    assert not any(s["alive"] for s in a["series"]) and "sampler failed" not in text
    assert text.count("was gone after 4000 requests") == 4


def test_every_checkpoint_row_is_measured():
    _, a = analysis()
    for row in a["checkpoints"]:
        assert row["total"] is not None and row["total"] > 0
        assert row["bytes_per_request"] is None or row["bytes_per_request"] > 0


def test_the_figure_has_a_panel_for_descriptors():
    samples, a = analysis()
    fig = plot.figure(samples, a)
    assert [ax.get_ylabel() for ax in fig.axes] == ["MiB (allocated)", "open file descriptors"]
    assert max(max(line.get_ydata()) for line in fig.axes[1].get_lines()) == 1024
    chart = plot.terminal(samples, a, width=80)
    assert "open file descriptors against requests" in chart


def test_the_trigger_record_has_one_size_and_ends_with_its_sequence_number():
    """The agents read it in place (at most 4095 bytes): every record replaces the whole of the last."""
    from asanlab.soak import driver

    every = driver.trigger_record(7, True, 500, [])
    listed = driver.trigger_record(8, True, 300, [12, 34])
    quiet = driver.trigger_record(9, False, 500, [12, 34])
    assert every.startswith(b"7 1 500 - 7\n") and listed.startswith(b"8 1 300 12,34 8\n")
    assert quiet.startswith(b"9 0 500 - 9\n")
    assert {len(every), len(listed), len(quiet)} == {driver.TRIGGER_SIZE} and driver.TRIGGER_SIZE < 4096
    # Hundreds of workers: the PIDs that do not fit are left out (no profile from them this time).
    many = driver.trigger_record(10, True, 500, list(range(100000, 101000)))
    line = many.split(b"\n")[0].split()
    assert len(many) == driver.TRIGGER_SIZE and line[0] == line[-1] == b"10"
    pids = [int(p) for p in line[3].split(b",")]
    assert pids == list(range(100000, 100000 + len(pids))) and 500 < len(pids) < 1000


def test_a_server_that_exited_right_after_a_sample_caught_it_shutting_down_is_gone():
    """A real session (tests/fixtures/soak/exited-while-sampled: the suite's server that shuts itself
    down at request 1200, two workers, coroutines on): the last sample, at 1250 requests, still listed
    every process, one worker no longer answering; then the app exited. Every process is gone after
    it, none "stopped answering while still running"."""
    folder = FIXTURE.parent / "exited-while-sampled"
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    load = json.loads((folder / "load.json").read_text())
    assert load["app_exited_after"] == samples[-1]["requests"] == 1250 and len(samples[-1]["processes"]) == 4
    assert any(p.get("answered") is False for p in samples[-1]["processes"].values())
    a = report.analyse(samples, {}, Criteria(threshold=1.0, min_growth=65536, warmup=500), load=load)
    text = report.render(a)
    assert "stopped answering" not in text and not any(s["alive"] for s in a["series"])
    assert text.count("was gone after 1250 requests") == 4, text


def test_a_container_that_stops_while_answers_are_awaited_has_no_process_alive():
    """The app exiting during a sample: the daemon refuses the exec (409, "is not running"). That is
    no process alive, not an error that ends the soak; any other refusal still is one."""
    import pytest
    from docker.errors import APIError

    from asanlab.soak import driver

    class Response:
        def __init__(self, code):
            self.status_code, self.reason, self.url = code, "", ""

    class Container:
        def __init__(self, code):
            self.code = code

        def exec_run(self, *a, **kw):
            raise APIError("Container abc is not running", response=Response(self.code))

    assert driver._alive(Container(409)) == set()
    with pytest.raises(APIError):
        driver._alive(Container(500))
