"""Registry helpers without a registry: prefixes, the tag a recipe computes without downloading,
and how Docker's error strings become clear errors (the round trip itself is in tests/docker)."""

import pytest

from asanlab.image import recipe as recipes, registry
from asanlab.errors import InfraError, UsageError


@pytest.mark.parametrize("good", ["127.0.0.1:5000/asanlab", "ghcr.io/org/asanlab", "registry.local/a/b"])
def test_good_prefixes(good):
    assert registry.check_prefix(good + "/") == good


@pytest.mark.parametrize("bad", ["asanlab", "Ghcr.io/Org", "ghcr.io/org:tag/x", "ghcr.io/org asanlab", ""])
def test_bad_prefixes(bad):
    with pytest.raises(UsageError, match="registry"):
        registry.check_prefix(bad)


def _recipe(tmp_path, body):
    path = tmp_path / "r.yml"
    path.write_text(body)
    return recipes.load(path)


def test_same_recipe_same_remote_tag_without_downloading(tmp_path):
    body = 'name: ci\nbase_image: debian:bookworm\nphp:\n  version: "8.2.32"\n'
    a = registry.remote_for("127.0.0.1:5000/asanlab", registry.expected(_recipe(tmp_path, body)))
    b = registry.remote_for("127.0.0.1:5000/asanlab", registry.expected(_recipe(tmp_path, body)))
    assert a.ref == b.ref and a.ref.startswith("127.0.0.1:5000/asanlab/ci:sha-")
    other = registry.expected(_recipe(tmp_path, body.replace("8.2.32", "8.2.31")))
    assert registry.remote_for("127.0.0.1:5000/asanlab", other).ref != a.ref


def test_unpinned_source_cannot_name_its_image(tmp_path):
    body = ('name: ci\nbase_image: debian:bookworm\nphp:\n  version: "8.2.32"\n'
            'swoole:\n  version: "6.1.9"\n')
    with pytest.raises(UsageError, match="not pinned"):
        registry.expected(_recipe(tmp_path, body))


@pytest.mark.parametrize("message,expected", [
    ('Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused', "cannot be reached"),
    ("denied: requested access to the resource is denied", "refused"),
    ("unauthorized: authentication required", "refused"),
    ("manifest for 127.0.0.1:5000/asanlab/x:sha-1 not found: manifest unknown: manifest unknown", "not in the registry"),
])
def test_docker_errors_become_clear_errors(message, expected):
    e = registry._explain("pull x", "127.0.0.1:5000", message)
    assert isinstance(e, InfraError) and expected in e.message and e.exit_code == 3


def test_stream_error_raises():
    with pytest.raises(InfraError, match="refused"):
        registry._stream(iter([{"status": "Preparing", "id": "a"}, {"error": "denied: access denied"}]),
                         "push x", "r", lambda e: None, "push")


def test_credentials_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("ASANLAB_REGISTRY_USER", raising=False)
    monkeypatch.delenv("ASANLAB_REGISTRY_TOKEN", raising=False)
    assert registry.auth_config() is None
    monkeypatch.setenv("ASANLAB_REGISTRY_USER", "ci")
    monkeypatch.setenv("ASANLAB_REGISTRY_TOKEN", "t0ken")
    assert registry.auth_config() == {"username": "ci", "password": "t0ken"}
