"""A real PECL extension built into an ASan image: igbinary, from Debian's source package.

Debian's php-igbinary orig tarball is PECL's own release archive (package.xml beside
igbinary-VERSION/); it is served on 127.0.0.1 so the recipe's URL, the download and the lock-file
pinning run as they would against pecl.php.net.
"""

import hashlib
import json
import re
import shutil
import subprocess

import pytest

from .conftest import REPO, asanlab, containers_of, remove_images

pytestmark = pytest.mark.docker

APP = """<?php
$data = ['orders' => [1, 2, 3], 'name' => str_repeat('x', 100)];
$packed = igbinary_serialize($data);
var_dump(igbinary_unserialize($packed) === $data);
echo phpversion('igbinary'), "\\n";
"""


@pytest.fixture(scope="module")
def igbinary(tmp_path_factory, mirror):
    """PECL's igbinary release archive, served beside PHP's tarball."""
    _, url, served = mirror
    folder = tmp_path_factory.mktemp("igbinary-source")
    subprocess.run([str(REPO / "tests" / "fixtures" / "get-php-source.sh"), "php-igbinary", str(folder)], check=True)
    [orig] = sorted(folder.glob("php-igbinary_*.orig.tar.*"))
    version = re.search(r"_(\d+\.\d+\.\d+)\.orig", orig.name).group(1)
    shutil.copyfile(orig, served / f"igbinary-{version}.tgz")
    return version, f"{url}/igbinary-{version}.tgz", served / f"igbinary-{version}.tgz"


def test_a_pecl_extension_is_built_instrumented_pinned_and_loaded(work, mirror, igbinary, docker_client):
    folder, env = work
    version, url, tarball = igbinary
    # The suite's one PHP (php.yml), so its stage is built once, with igbinary on top.
    (folder / "ext.yml").write_text(
        (folder / "php.yml").read_text().replace("name: e2e-php", "name: e2e-ext")
        + f'extensions:\n  - name: igbinary\n    version: "{version}"\n    source: {{url: "{url}"}}\n')
    remove_images(docker_client, "e2e-ext")  # a machine kept from an earlier run: build for real again
    proc = asanlab("build", "ext.yml", cwd=folder, env=env, check=0)
    image = proc.stdout.splitlines()[0]
    # Nothing publishes a sha256 for a PECL archive: the first download is pinned in the lock file.
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert json.loads((folder / "ext.lock").read_text())["sources"][url] == digest
    assert "instrumentation check passed" in proc.stderr
    # The check found ASan's checks in the extension itself, not only in php.
    so = docker_client.containers.run(image, ["sh", "-c", "find /opt/php/lib/php/extensions -name igbinary.so "
                                              "-exec grep -a -c __asan_report_ {} +"], remove=True).decode()
    assert int(so.strip()) > 0
    (folder / "igb").mkdir()
    (folder / "igb" / "app.php").write_text(APP)
    run = asanlab("run", "igb/app.php", "--image", image, "--format", "json", cwd=folder, env=env, check=0)
    result = json.loads(run.stdout)
    output = (folder / ".asanlab" / "sessions" / result["session"]["id"] / "raw" / "output.log").read_text()
    assert "bool(true)" in output and version in output
    assert containers_of(docker_client, result["session"]["id"]) == []
    # --frozen accepts the recipe now that its extension is pinned.
    asanlab("build", "ext.yml", "--frozen", cwd=folder, env=env, check=0)
