"""The soak's load generator against a real HTTP server on 127.0.0.1."""

import threading

import pytest

from asanlab.errors import UsageError
from asanlab.load import Loader, Request, requests_from_file


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
