import pytest


@pytest.fixture(autouse=True)
def no_docker_engine(monkeypatch):
    """Unit tests never reach the machine's Docker engine: a command that does (`sessions` recovers
    orphaned containers) would stop the containers of end-to-end tests running beside them.
    Tests that need Docker pass a fake client."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/asanlab-unit-tests.sock")
