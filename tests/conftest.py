import functools
import http.server
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture
def state(tmp_path, monkeypatch):
    """asanlab's state and cache in a fresh folder."""
    monkeypatch.setenv("ASANLAB_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("ASANLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


class Served:
    def __init__(self, folder: Path, server) -> None:
        self.folder = folder
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.requests: list[str] = []


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; records the paths requested."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    # A short poll: shutdown() waits for serve_forever's next poll (0.5 s by default) in every test.
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    served = Served(folder, server)
    served.requests = requests
    yield served
    server.shutdown()
    server.server_close()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """cli(*args, cwd=None, env=None): asanlab's real entry point (main(), which turns errors into
    exit codes), in this process: no interpreter start-up per call."""
    from asanlab.cli import main

    def invoke(*args, cwd=None, env=None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "argv", ["asanlab", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke
