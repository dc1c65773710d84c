import functools
import http.server
import threading
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
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    served = Served(folder, server)
    served.requests = requests
    yield served
    server.shutdown()
    server.server_close()
