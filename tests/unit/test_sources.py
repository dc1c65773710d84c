import hashlib
import json

import pytest

from asanlab.image import recipe, sources
from asanlab.errors import EXIT_INFRA, EXIT_USAGE, SourceError, UsageError
from asanlab.events import Collect


def write_recipe(folder, body):
    p = folder / "r.yml"
    p.write_text(body)
    return recipe.load(p)


def cached_files(state):
    root = state / "cache" / "sources"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_verifies_and_caches(state, http_folder):
    data = b"not really php" * 1000
    (http_folder.folder / "php-8.2.1.tar.xz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    r = write_recipe(state, f'name: x\nphp:\n  version: "8.2.1"\n  source:\n'
                            f'    url: {http_folder.url}/php-8.2.1.tar.xz\n    sha256: {digest}\n')
    events = Collect()
    [f] = sources.fetch_all(r, reporter=events)
    assert f.sha256 == digest and f.path.read_bytes() == data and f.filename == "php-8.2.1.tar.xz"
    assert "source.progress" in events.kinds()
    # Second time: from the cache, no request.
    before = len(http_folder.requests)
    [again] = sources.fetch_all(r)
    assert again.path == f.path and len(http_folder.requests) == before


def test_checksum_mismatch_caches_nothing(state, http_folder):
    (http_folder.folder / "php-8.2.1.tar.xz").write_bytes(b"tampered")
    r = write_recipe(state, f'name: x\nphp:\n  version: "8.2.1"\n  source:\n'
                            f'    url: {http_folder.url}/php-8.2.1.tar.xz\n    sha256: \"{"0" * 64}\"\n')
    with pytest.raises(SourceError) as e:
        sources.fetch_all(r)
    assert e.value.exit_code == EXIT_INFRA
    assert "sha256 mismatch" in e.value.message and "0" * 64 in e.value.message
    assert cached_files(state) == []
    assert not (state / "r.lock").exists()


def test_release_checked_against_php_net_data(state, http_folder, monkeypatch):
    # A mirror serving a file that is not PHP 8.2.32: php.net's published sha256 catches it.
    (http_folder.folder / "php-8.2.32.tar.xz").write_bytes(b"something else")
    monkeypatch.setenv("ASANLAB_PHP_MIRROR", http_folder.url)
    r = write_recipe(state, 'name: x\nphp:\n  version: "8.2.32"\n')
    [planned] = sources.plan(r)
    assert planned.pinned_by == "php.net"
    assert planned.expected == "e02aa173c236c12791696254d607da680e6d5516f8f5c2339642de7c4f944bd2"
    assert planned.url == f"{http_folder.url}/php-8.2.32.tar.xz"
    with pytest.raises(SourceError, match="pinned by php.net"):
        sources.fetch_all(r)
    assert cached_files(state) == []


def test_first_download_is_pinned_then_verified(state, http_folder, monkeypatch):
    monkeypatch.setenv("ASANLAB_SWOOLE_MIRROR", http_folder.url)
    (http_folder.folder / "php-8.2.1.tar.xz").write_bytes(b"php")
    (http_folder.folder / "v6.1.9.tar.gz").write_bytes(b"swoole one")
    body = (f'name: x\nphp:\n  version: "8.2.1"\n  source:\n    url: {http_folder.url}/php-8.2.1.tar.xz\n'
            f'    sha256: {hashlib.sha256(b"php").hexdigest()}\nswoole:\n  version: "6.1.9"\n')
    r = write_recipe(state, body)
    with pytest.raises(UsageError) as e:
        sources.fetch_all(r, frozen=True)
    assert e.value.exit_code == EXIT_USAGE and "swoole" in e.value.message and "--frozen" in e.value.message
    fetched = sources.fetch_all(r)
    lock = json.loads((state / "r.lock").read_text())
    # Keyed by the release URL, not the mirror's: the lock holds with another mirror or none.
    assert lock["sources"] == {"https://github.com/swoole/swoole-src/archive/refs/tags/v6.1.9.tar.gz":
                               hashlib.sha256(b"swoole one").hexdigest()}
    assert [f.filename for f in fetched] == ["php-8.2.1.tar.xz", "swoole-6.1.9.tar.gz"]
    # Now pinned: --frozen accepts it; a changed upstream archive is refused.
    sources.fetch_all(r, frozen=True)
    (http_folder.folder / "v6.1.9.tar.gz").write_bytes(b"swoole changed")
    import shutil
    shutil.rmtree(state / "cache")
    with pytest.raises(SourceError, match="pinned by lock"):
        sources.fetch_all(r)


def test_http_error_is_clear(state, http_folder):
    r = write_recipe(state, f'name: x\nphp:\n  version: "8.2.1"\n  source:\n    url: {http_folder.url}/missing.tar.xz\n')
    with pytest.raises(SourceError, match="HTTP 404"):
        sources.fetch_all(r)


def test_unreachable_host(state):
    r = write_recipe(state, 'name: x\nphp:\n  version: "8.2.1"\n  source:\n    url: http://127.0.0.1:9/php.tar.xz\n')
    with pytest.raises(SourceError, match="cannot download"):
        sources.fetch_all(r)


def test_local_path_source(state):
    (state / "swoole.tar.gz").write_bytes(b"local")
    r = write_recipe(state, 'name: x\nphp:\n  version: "8.2.1"\n  source:\n    debian: php8.2\n'
                            'swoole:\n  version: "6.1.9"\n  source:\n    path: swoole.tar.gz\n')
    [f] = sources.fetch_all(r)
    assert f.role == "swoole" and f.path.read_bytes() == b"local"


def test_bad_lock_file(state):
    (state / "r.lock").write_text("garbage")
    r = write_recipe(state, 'name: x\nphp:\n  version: "8.2.1"\nswoole:\n  version: "6.1.9"\n')
    with pytest.raises(UsageError, match="not an asanlab lock file"):
        sources.plan(r)
