"""The soak's load generator against a real HTTP server on 127.0.0.1."""

import shutil
import threading

import pytest

from asanlab.errors import UsageError
from asanlab.load import AbLoader, Loader, Request, ab_supports, make_loader, parse_ab, requests_from_file


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


needs_ab = pytest.mark.skipif(shutil.which("ab") is None, reason="ab (apache2-utils) is not installed; "
                                                                  "`make test` installs it")


@needs_ab
def test_ab_sends_exactly_the_requests_asked(http_folder):
    (http_folder.folder / "ok.txt").write_text("ok")
    loader = AbLoader(Request("GET", f"{http_folder.url}/ok.txt"), concurrency=4)
    try:
        stats = [loader.send(n) for n in (7, 150)]
        assert loader.probe() is None
    finally:
        loader.close()
    assert [s.sent for s in stats] == [7, 150] and [s.ok for s in stats] == [7, 150]
    assert len(http_folder.requests) == 158 and loader.probes_answered == 1
    assert loader.total.sent == 157


@needs_ab
def test_ab_counts_non_2xx_and_a_refused_server(http_folder):
    loader = AbLoader(Request("GET", f"{http_folder.url}/missing"), concurrency=2)
    try:
        stats = loader.send(5)
        assert stats.sent == 5 and stats.ok == 0 and stats.statuses["non-2xx"] == 5
        http_folder.server.shutdown()
        http_folder.server.server_close()
        refused = loader.send(3)
    finally:
        loader.close()
    assert refused.sent == 3 and refused.ok == 0 and refused.failed == 3 and sum(refused.errors.values()) == 3


def test_ab_command_line_carries_method_headers_and_body():
    loader = AbLoader(Request("POST", "http://127.0.0.1:9501/orders",
                              (("Content-Type", "application/json"), ("X-Token", "t")), b'{"id": 1}'), concurrency=8)
    try:
        cmd = loader.command(100)
        body = open(cmd[cmd.index("-p") + 1], "rb").read()
    finally:
        loader.close()
    assert cmd[:9] == ["ab", "-q", "-k", "-r", "-n", "100", "-c", "8", "-s"]
    assert cmd[cmd.index("-T") + 1] == "application/json" and ["-H", "X-Token: t"] == cmd[cmd.index("-H"):cmd.index("-H") + 2]
    assert body == b'{"id": 1}' and cmd[-1] == "http://127.0.0.1:9501/orders"


def test_ab_summary_parsing_counts_length_changes_as_answers():
    out = ("Complete requests:      100\nFailed requests:        12\n   (Connect: 0, Receive: 0, Length: 10, "
           "Exceptions: 2)\nNon-2xx responses:      5\n")
    stats = parse_ab(out)
    assert (stats.sent, stats.ok, stats.failed) == (100, 93, 7)
    with pytest.raises(ValueError):
        parse_ab("apr_socket_connect(): Connection refused (111)")


def test_client_choice():
    one = [Request("GET", "http://127.0.0.1:9501/")]
    assert isinstance(make_loader(one, 4, "builtin"), Loader)
    two = one * 2
    with pytest.raises(UsageError, match="--client ab: ab sends one request"):
        make_loader(two, 4, "ab")
    assert isinstance(make_loader(two, 4, "auto"), Loader)
    assert ab_supports([Request("PATCH", "http://127.0.0.1/", (), b"x")]) is not None
