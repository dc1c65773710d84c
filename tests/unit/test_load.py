"""The soak's load generator against a real HTTP server on 127.0.0.1."""

import shutil
import threading

import pytest

from asanlab.errors import UsageError
from asanlab.soak.load import H2loadLoader, Loader, Request, make_loader, parse_h2load, requests_from_file


def test_sends_exactly_the_requests_asked_and_counts_statuses(http_folder):
    (http_folder.folder / "ok.txt").write_text("ok")
    loader = Loader([Request("GET", f"{http_folder.url}/ok.txt"), Request("GET", f"{http_folder.url}/missing")],
                    concurrency=4)
    try:
        first = loader.send(7)
        second = loader.send(5)
    finally:
        loader.close()
    assert (first.sent, second.sent) == (7, 5)
    # What the server saw, not only what the client counted (the server logs a 404 twice).
    assert len(http_folder.requests) == 6 + 2 * 6
    assert first.statuses[200] == 4 and first.statuses[404] == 3 and first.failed == 3
    assert loader.total.sent == 12 and loader.total.ok == 6


def test_refused_connections_are_counted_not_raised(http_folder):
    url = http_folder.url
    http_folder.server.shutdown()
    http_folder.server.server_close()
    loader = Loader([Request("GET", f"{url}/x")], concurrency=2, timeout=5)
    try:
        stats = loader.send(3)
        why = loader.probe()
    finally:
        loader.close()
    assert stats.sent == 3 and stats.ok == 0 and sum(stats.errors.values()) == 3
    assert why is not None and "Connect" in why
    assert loader.probes_answered == 0


def test_an_answered_probe_is_counted(http_folder):
    loader = Loader([Request("GET", f"{http_folder.url}/")])
    try:
        assert loader.probe() is None
    finally:
        loader.close()
    assert loader.probes_answered == 1 and len(http_folder.requests) == 1
    assert loader.total.sent == 1 and loader.total.statuses[200] == 1


def test_stop_ends_a_batch_early(http_folder):
    stop = threading.Event()
    stop.set()
    loader = Loader([Request("GET", f"{http_folder.url}/")])
    try:
        assert loader.send(100, stop).sent == 0
    finally:
        loader.close()


def test_requests_file_errors_name_the_line(tmp_path):
    f = tmp_path / "requests.jsonl"
    f.write_text('# orders\n{"method": "post", "url": "/orders", "body": "{}"}\n{"url": "/x", "verb": "GET"}\n')
    with pytest.raises(UsageError, match=r"requests.jsonl:3: unknown key 'verb'"):
        requests_from_file(f, "http://127.0.0.1:9501/")
    f.write_text('{"method": "post", "url": "/orders", "headers": {"X-A": "1"}, "body": "{}"}\n')
    [req] = requests_from_file(f, "http://127.0.0.1:9501/")
    assert req == Request("POST", "http://127.0.0.1:9501/orders", (("X-A", "1"),), b"{}")


needs_h2load = pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not "
                                                                          "installed; `make test` installs it")


@needs_h2load
def test_h2load_sends_exactly_the_requests_asked(http_folder):
    (http_folder.folder / "ok.txt").write_text("ok")
    loader = H2loadLoader(Request("GET", f"{http_folder.url}/ok.txt"), concurrency=4)
    try:
        stats = [loader.send(n) for n in (3, 150)]
        assert loader.probe() is None
    finally:
        loader.close()
    assert [s.sent for s in stats] == [3, 150] and [s.ok for s in stats] == [3, 150]
    assert len(http_folder.requests) == 154 and loader.probes_answered == 1
    assert loader.total.sent == 154 and loader.total.statuses["2xx"] == 154  # the probe included


@needs_h2load
def test_h2load_counts_non_2xx_and_a_refused_server(http_folder):
    loader = H2loadLoader(Request("GET", f"{http_folder.url}/missing"), concurrency=2)
    try:
        stats = loader.send(5)
        assert stats.sent == 5 and stats.ok == 0 and stats.statuses["4xx"] == 5
        http_folder.server.shutdown()
        http_folder.server.server_close()
        refused = loader.send(3)
    finally:
        loader.close()
    assert refused.sent == 3 and refused.ok == 0 and refused.errors["h2load: errored"] == 3


def test_h2load_command_line_carries_method_headers_and_body():
    loader = H2loadLoader(Request("PUT", "http://127.0.0.1:9501/orders",
                                  (("Content-Type", "application/json"), ("X-Token", "t")), b'{"id": 1}'),
                          concurrency=8)
    try:
        cmd = loader.command(100)
        body = open(cmd[cmd.index("-d") + 1], "rb").read()
        assert loader.command(3)[:5] == ["h2load", "--h1", "-n", "3", "-c"] and loader.command(3)[5] == "3"
    finally:
        loader.close()
    assert cmd[:6] == ["h2load", "--h1", "-n", "100", "-c", "8"]
    headers = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-H"]
    assert headers == ["Content-Type: application/json", "X-Token: t", ":method: PUT"]
    assert body == b'{"id": 1}' and cmd[-1] == "http://127.0.0.1:9501/orders"


def test_h2load_summary_parsing():
    out = ("finished in 1.2s, 800 req/s\n"
           "requests: 1000 total, 1000 started, 998 done, 990 succeeded, 10 failed, 0 errored, 2 timeout\n"
           "status codes: 980 2xx, 0 3xx, 10 4xx, 8 5xx\n")
    stats = parse_h2load(out)
    assert (stats.sent, stats.ok, stats.failed) == (1000, 980, 20)
    assert stats.statuses == {"2xx": 980, "4xx": 10, "5xx": 8} and stats.errors == {"h2load: timeout": 2}
    with pytest.raises(ValueError):
        parse_h2load("connect: Connection refused")


def test_client_choice():
    one = [Request("GET", "http://127.0.0.1:9501/")]
    assert isinstance(make_loader(one, 4, "builtin"), Loader)
    two = one * 2
    with pytest.raises(UsageError, match="--client h2load: h2load is given one request"):
        make_loader(two, 4, "h2load")
    assert isinstance(make_loader(two, 4, "auto"), Loader)


def test_server_count_is_read_from_the_stats_url_and_a_bad_one_is_said_once(http_folder):
    """--stats-url: the app's own request_count, and a URL without it warns once without stopping the soak."""
    import types

    from asanlab.soak.driver import Driver, SoakOptions

    (http_folder.folder / "stats").write_text('{"request_count": 1234, "connection_num": 3}')
    (http_folder.folder / "html").write_text("<html>not json</html>")
    (http_folder.folder / "other").write_text('{"requests": 5}')
    events = []
    ctx = types.SimpleNamespace(reporter=events.append)

    def driver(path):
        opts = SoakOptions(requests=[], checkpoints=[10], stats_url=f"{http_folder.url}/{path}")
        return Driver(opts, agent=False, loader=None)

    good = driver("stats")
    assert good._server_requests(ctx) == 1234 and good.stats_reads == 1 and events == []
    for path in ("html", "missing", "other"):
        bad = driver(path)
        assert bad._server_requests(ctx) is None and bad._server_requests(ctx) is None
    assert len(events) == 3
    assert "/html: its answer is not JSON" in events[0].message
    assert "/missing" in events[1].message and "404" in events[1].message
    assert "/other: its JSON has no whole-number request_count" in events[2].message


def test_the_requests_a_soak_cycles_through_come_from_its_flags(tmp_path):
    from asanlab.soak.load import requests_for

    one = requests_for("http://127.0.0.1:9501/o", method="post", headers=["X-A: 1"], body="{}")
    assert one == [Request("POST", "http://127.0.0.1:9501/o", (("X-A", "1"),), b"{}")]
    (tmp_path / "b").write_bytes(b"\x00\x01")
    assert requests_for("http://h:1/", body_file=tmp_path / "b")[0].body == b"\x00\x01"
    (tmp_path / "r.jsonl").write_text('{"url": "/a"}\n{"method": "put", "url": "b", "body": "x"}\n')
    many = requests_for("http://h:1/base/", requests_file=tmp_path / "r.jsonl", method="DELETE")
    assert [(r.method, r.url, r.body) for r in many] == [("GET", "http://h:1/a", None),
                                                           ("PUT", "http://h:1/base/b", b"x")]
    with pytest.raises(UsageError, match="give --body or --body-file, not both"):
        requests_for("http://h:1/", body="x", body_file=tmp_path / "b")
    with pytest.raises(UsageError, match=f"--body-file {tmp_path / 'nope'}: No such file"):
        requests_for("http://h:1/", body_file=tmp_path / "nope")
