"""Publish and pull for real: a registry (Debian's docker-registry) started on 127.0.0.1 by the
test, `asanlab build --push`, the local image deleted, `asanlab pull RECIPE`, then a run that uses
the pulled image without building."""

import os
import shutil
import subprocess

import pytest
import requests

from .conftest import free_port, wait_http, asanlab, containers_of, remove_images

pytestmark = pytest.mark.docker



@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    binary = shutil.which("docker-registry")
    if binary is None:
        message = "docker-registry is not installed (Debian package docker-registry; `make test` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    (folder / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {folder / 'data'}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([binary, "serve", str(folder / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=open(folder / "registry.log", "w"))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/", 30, lambda: (folder / "registry.log").read_text())
    yield f"127.0.0.1:{port}", base
    proc.terminate()
    proc.wait(timeout=10)


def test_push_delete_pull_run(registry, work, docker_client):
    host, base = registry
    folder, env = work
    prefix = f"{host}/asanlab"
    # One name for the registry prefix on every command: --registry, or ASANLAB_REGISTRY.
    built = asanlab("build", "php.yml", "--push", cwd=folder, env={**env, "ASANLAB_REGISTRY": prefix}, check=0)
    content_ref = built.stdout.splitlines()[0]  # asanlab/e2e-php:sha-...
    content_tag = content_ref.split(":")[1]
    assert f"pushed {prefix}/e2e-php:{content_tag}" in built.stdout
    tags = requests.get(f"{base}/v2/asanlab/e2e-php/tags/list", timeout=10).json()["tags"]
    assert content_tag in tags and any(t.startswith("php") for t in tags)

    # A CI machine: no local image. The same recipe computes the same tag and pulls it.
    remove_images(docker_client, "e2e-php")
    for image in docker_client.images.list(name=f"{prefix}/e2e-php"):
        docker_client.images.remove(image.id, force=True)
    pulled = asanlab("pull", "php.yml", "--registry", prefix, cwd=folder, env=env, check=0)
    assert pulled.stdout.splitlines()[0] == content_ref
    image = docker_client.images.get(content_ref)
    assert image.labels["org.asanlab.digest"].startswith(content_tag[4:])

    # run with the registry: the image is here now, nothing is built.
    (folder / "reg").mkdir(exist_ok=True)
    (folder / "reg" / "app.php").write_text('<?php echo "hello from the pulled image\\n";\n')
    ran = asanlab("run", "reg/app.php", "--recipe", "php.yml", "--registry", prefix, "--format", "json",
                  cwd=folder, env=env, check=0)
    assert "building" not in ran.stderr and "hello from the pulled image" in ran.stderr
    import json

    session = json.loads(ran.stdout)["session"]
    assert session["image"]["id"] == image.id
    assert containers_of(docker_client, session["id"]) == []


def test_missing_tag_and_unreachable_registry_are_clear_errors(registry, work):
    host, _ = registry
    folder, env = work
    (folder / "other.yml").write_text((folder / "php.yml").read_text().replace("name: e2e-php", "name: e2e-never"))
    missing = asanlab("pull", "other.yml", "--registry", f"{host}/asanlab", cwd=folder, env=env, check=3)
    assert "not in the registry" in missing.stderr and "e2e-never" in missing.stderr
    closed = free_port()
    # The spelling before --registry still works for a release, and says so.
    unreachable = asanlab("pull", "php.yml", "--from", f"127.0.0.1:{closed}/asanlab", cwd=folder, env=env, check=3)
    assert "cannot be reached" in unreachable.stderr and "--from PREFIX is now --registry PREFIX" in unreachable.stderr
    old_push = asanlab("build", "php.yml", "--push", f"127.0.0.1:{closed}/asanlab", cwd=folder, env=env, check=3)
    assert "`build --push PREFIX` is now `build --push --registry PREFIX`" in old_push.stderr
    assert "cannot be reached" in old_push.stderr
    always = asanlab("run", "reg/app.php", "--recipe", "other.yml", "--registry", f"{host}/asanlab",
                     "--pull", "always", cwd=folder, env=env, check=3)
    assert "not in the registry" in always.stderr
