"""The first hour, for real: `asanlab init --from-image` on a production-like image, the recipe it
writes built and compared with that image, and `asanlab run app.php` finding its recipe by itself.

The production-like image is the speed bench's release image (Debian's php8.2-cli, Swoole 6.1.9
built -O2 with sockets, OpenSSL and brotli) with Debian's php8.2-redis installed (which brings
php8.2-igbinary). PECL is not reachable here: redis and igbinary come from Debian's source packages,
whose orig tarballs hold the upstream releases, served on 127.0.0.1 as ASANLAB_PECL_MIRROR.
"""

import io
import json
import re
import shutil
import subprocess
import tarfile

import pytest

from .conftest import REPO, SWOOLE_MAIN, asanlab, php_modules, remove_images, serve, swoole_features

pytestmark = [pytest.mark.docker, pytest.mark.swoole]

RELEASE = "asanlab-test/release:swoole"
PRODUCTION = "asanlab-test/release:redis"
NO_SWOOLE = "asanlab-test/release:no-swoole"
BROKEN_PHP = "asanlab-test/broken-php:1"
APP = '<?php echo "swoole ", phpversion("swoole") ?: "none", " on PHP ", PHP_VERSION, "\\n";\n'


@pytest.fixture(scope="module")
def images(docker_client, swoole_mirror, base_image, tmp_path_factory):
    """The release image, the production-like one, one without Swoole and one whose php fails."""
    context = tmp_path_factory.mktemp("release")
    shutil.copyfile(REPO / "bench" / "speed" / "release.Dockerfile", context / "Dockerfile")
    shutil.copyfile(swoole_mirror[1], context / "swoole.tar.gz")
    docker_client.images.build(path=str(context), tag=RELEASE, rm=True)
    for tag, lines in ((PRODUCTION, "RUN apt-get update && apt-get install -y --no-install-recommends php8.2-redis "
                                    "&& rm -rf /var/lib/apt/lists/*"),
                       (NO_SWOOLE, "RUN rm /etc/php/8.2/cli/conf.d/20-swoole.ini")):
        docker_client.images.build(fileobj=io.BytesIO(f"FROM {RELEASE}\n{lines}\n".encode()), tag=tag, rm=True)
    broken = "RUN printf '#!/bin/sh\\necho \"php: cannot load libphp\" >&2\\nexit 127\\n' > /usr/local/bin/php " \
             "&& chmod +x /usr/local/bin/php"
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {base_image}\n{broken}\n".encode()), tag=BROKEN_PHP, rm=True)
    return RELEASE


def _pecl_release(folder, package: str, name: str, served) -> str:
    """PECL's archive of `name` (package.xml beside NAME-VERSION/), from Debian's source package."""
    subprocess.run([str(REPO / "tests" / "fixtures" / "get-php-source.sh"), package, str(folder)], check=True)
    [orig] = sorted(folder.glob(f"{package}_*.orig.tar.*"))
    with tarfile.open(orig) as t:
        tops = sorted({m.name.split("/")[0] for m in t.getmembers()})
        # php-redis's orig tarball carries two releases (redis-4.3.0/ for old PHPs, redis-5.3.7/):
        # PECL's archive of the newest is its folder and package.xml.
        version = max((re.fullmatch(rf"{name}-(\d+\.\d+\.\d+)", d).group(1) for d in tops
                       if re.fullmatch(rf"{name}-\d+\.\d+\.\d+", d)), key=lambda v: tuple(map(int, v.split("."))))
        with tarfile.open(served / f"{name}-{version}.tgz", "w:gz") as out:
            for m in t.getmembers():
                if m.name == "package.xml" or m.name == f"{name}-{version}" or m.name.startswith(f"{name}-{version}/"):
                    out.addfile(m, t.extractfile(m) if m.isfile() else None)
    return version


@pytest.fixture(scope="module")
def pecl_mirror(tmp_path_factory):
    served = tmp_path_factory.mktemp("pecl-mirror")
    work = tmp_path_factory.mktemp("pecl-sources")
    versions = {name: _pecl_release(work, package, name, served)
                for package, name in (("php-redis", "redis"), ("php-igbinary", "igbinary"))}
    url, server = serve(served)
    yield url, versions
    server.shutdown()


def test_init_from_a_production_image_builds_the_same_php(images, work, pecl_mirror, swoole_mirror, docker_client,
                                                          tmp_path):
    """init --from-image, build, and the rebuilt PHP has the production image's modules and Swoole
    features; opcache, a zend_extension, is said to be left out."""
    _, env = work
    pecl_url, versions = pecl_mirror
    env = {**env, "ASANLAB_SWOOLE_MIRROR": swoole_mirror[0], "ASANLAB_PECL_MIRROR": pecl_url}
    init = asanlab("init", "--from-image", PRODUCTION, "--name", "release-redis", cwd=tmp_path, env=env, check=0)
    written = (tmp_path / "asanlab.yml").read_text()
    assert "wrote asanlab.yml: PHP 8.2 (Debian's php8.2), Swoole 6.1.9, 2 other extension(s)" in init.stderr
    assert re.search(r"- name: igbinary\n    version: \"" + re.escape(versions["igbinary"]), written)
    assert f'- name: redis\n    version: "{versions["redis"]}"' in written
    assert "opcache" in written.split("# Not reproduced:")[1].lower()
    remove_images(docker_client, "release-redis")  # build for real, every run
    build = asanlab("build", cwd=tmp_path, env=env, timeout=3600, check=0)
    assert "recipe asanlab.yml (found in the current folder)" in build.stderr
    assert "instrumentation check passed" in build.stderr
    rebuilt = build.stdout.splitlines()[0]
    source_modules = php_modules(docker_client, PRODUCTION)
    assert "redis" in source_modules and "igbinary" in source_modules and "swoole" in source_modules
    assert php_modules(docker_client, rebuilt) == source_modules - {"Zend OPcache"}
    source_rows, rebuilt_rows = swoole_features(docker_client, PRODUCTION), swoole_features(docker_client, rebuilt)
    assert source_rows.keys() == rebuilt_rows.keys(), (source_rows, rebuilt_rows)
    assert source_rows["sockets"] == rebuilt_rows["sockets"] == "enabled"
    assert source_rows["Version"] == rebuilt_rows["Version"] == SWOOLE_MAIN


@pytest.mark.parametrize("image, says", [
    ("debian:bookworm", "has no `php` on its PATH"),
    (NO_SWOOLE, "has no Swoole extension"),
    (BROKEN_PHP, "`php` fails (exit status 127): php: cannot load libphp"),
    ("asanlab-test/not-here:1", "not on this machine"),
])
def test_init_from_an_image_it_cannot_reproduce_writes_nothing(images, image, says, tmp_path):
    proc = asanlab("init", "--from-image", image, cwd=tmp_path, check=2)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("asanlab: error:")]
    assert len(errors) == 1 and says in errors[0], proc.stderr
    assert not (tmp_path / "asanlab.yml").exists()


def test_init_reads_without_network_and_leaves_no_container(images, docker_client, tmp_path):
    """The probe container is removed, and an image without Swoole may still give its PHP alone."""
    before = {c.id for c in docker_client.containers.list(all=True)}
    asanlab("init", "--from-image", NO_SWOOLE, "--php-only", cwd=tmp_path, check=0)
    assert {c.id for c in docker_client.containers.list(all=True)} <= before
    assert "swoole:" not in (tmp_path / "asanlab.yml").read_text()


def test_run_app_php_finds_its_recipe(work, swoole_mirror, docker_client, tmp_path):
    """`asanlab run app.php` with an asanlab.yml in the current folder, in the app's folder, and
    with none (the built-in default): each runs, and says which recipe it used."""
    folder, env = work
    env = {**env, "ASANLAB_SWOOLE_MIRROR": swoole_mirror[0]}
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "app.php").write_text(APP)
    php_only = (folder / "php.yml").read_text()
    (project / "src" / "asanlab.yml").write_text(php_only)

    def run(timeout=600):
        proc = asanlab("run", "src/app.php", "--format", "json", cwd=project, env=env, timeout=timeout, check=0)
        session = json.loads(proc.stdout)["session"]["id"]
        stored = json.loads((folder / ".asanlab" / "sessions" / session / "session.json").read_text())
        return proc, stored["recipe"]["name"] if stored.get("recipe") else None

    beside, name = run()
    assert "asanlab: recipe src/asanlab.yml (found in the app's folder; none in the current folder)" in beside.stderr
    assert "swoole none on PHP 8.2." in beside.stderr and name == "e2e-php"
    (project / "asanlab.yml").write_text(php_only.replace("name: e2e-php", "name: e2e-php-here"))
    here, name = run()
    assert "asanlab: recipe asanlab.yml (found in the current folder)" in here.stderr and name == "e2e-php-here"
    (project / "asanlab.yml").unlink()
    (project / "src" / "asanlab.yml").unlink()
    remove_images(docker_client, "asanlab-default")  # build for real, every run
    default, name = run(timeout=3600)
    assert "asanlab: recipe: the built-in default, PHP 8.2 + Swoole 6.1.9" in default.stderr
    assert f"swoole {SWOOLE_MAIN} on PHP 8.2." in default.stderr and name == "asanlab-default"
