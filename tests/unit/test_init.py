"""asanlab init's parsing and mapping, on the real probe output of a production-like image
(tests/fixtures/init/release-probe.txt: the speed bench's release image, Debian's PHP 8.2 and a
Swoole 6.1.9 built with sockets, OpenSSL and brotli), and the project file's discovery."""

import json
import os
from pathlib import Path

import pytest
import yaml

from asanlab import project
from asanlab.errors import UsageError
from asanlab.image import recipe as recipes
from asanlab.init import composer, facts, mapping, writer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "init"
RELEASE = (FIXTURES / "release-probe.txt").read_text()


def release_facts():
    return facts.parse(RELEASE, "release")


def test_release_probe_is_read():
    f = release_facts()
    assert (f.os_id, f.os_codename, f.php_version) == ("debian", "bookworm", "8.2.32")
    assert f.debian_php == "php8.2" and f.debian_php_version.startswith("8.2.32-")
    assert f.swoole["version"] == "6.1.9" and "sockets" in f.swoole and "brotli" in f.swoole
    # The ini directives after the feature rows are not features.
    assert not any(k.startswith("swoole.") or k == "directive" for k in f.swoole)
    assert "zend opcache" in f.zend_extensions and "sodium" in f.extensions


def test_release_image_maps_to_the_built_in_default():
    """A Debian bookworm server's PHP + Swoole is the built-in default: their images share every stage."""
    text = writer.text(mapping.from_image(release_facts(), "release", "release"))
    written = yaml.safe_load(text)
    default = yaml.safe_load(project.default_recipe().read_text())
    for key in ("base_image", "packages", "sanitizers"):
        assert written[key] == default[key], key
    assert written["php"] == default["php"]
    assert written["swoole"]["version"] == default["swoole"]["version"]
    assert written["swoole"]["configure"] == default["swoole"]["configure"]


def test_an_asanlab_image_built_from_debian_source_is_rebuilt_the_same_way():
    """An asanlab image has its PHP in /opt/php, no Debian package of it: its label says which
    source package it was built from, so the recipe init writes shares its build stages. A label
    that is not a Debian package name is ignored (the image may come from anywhere)."""
    asanlab_image = "\n".join(line for line in RELEASE.splitlines() if not line.startswith("php"))
    plain = facts.parse(asanlab_image, "img")
    assert plain.debian_php is None and plain.asanlab_php_debian is None
    written = yaml.safe_load(writer.text(mapping.from_image(plain, "img", "img")))
    assert written["php"]["version"] == "8.2.32" and "source" not in written["php"]
    labelled = facts.parse(asanlab_image, "img", {"org.asanlab.php-source": "debian:php8.2"})
    written = yaml.safe_load(writer.text(mapping.from_image(labelled, "img", "img")))
    assert written["php"] == yaml.safe_load(project.default_recipe().read_text())["php"]
    for bad in ("debian:php8.2; rm -rf /", "php8.2", "debian:../x", ""):
        assert facts.parse(asanlab_image, "img", {"org.asanlab.php-source": bad}).asanlab_php_debian is None


def test_what_cannot_be_mapped_is_a_comment_never_a_silent_drop():
    text = writer.text(mapping.from_image(release_facts(), "release", "release"))
    tail = text.split("# Not reproduced:", 1)[1]
    assert "opcache" in tail.lower() and "zend_extension" in tail
    f = release_facts()
    unknown = facts.ImageFacts(**{**f.__dict__, "extensions": {**f.extensions, "weird_ext": "1.0", "redis": "5.3.7",
                                                               "apcu": "dev-main"}})
    plan = mapping.from_image(unknown, "x", "x")
    assert ("redis", "5.3.7") in plan.extensions
    body = writer.text(plan)
    assert "weird_ext 1.0: an extension asanlab does not know" in body
    assert "apcu: a PECL extension whose version (dev-main)" in body
    recipes.parse(body)  # and it loads


def test_facts_from_an_image_are_never_yaml():
    """A hostile image's extension names and versions reach only comments, one printable line each."""
    f = release_facts()
    evil = facts.ImageFacts(**{**f.__dict__, "extensions": {**f.extensions, "x\nname: pwned": "1\n- y"},
                               "swoole": {**f.swoole, "evil\nbase_image: x": "on"}})
    body = writer.text(mapping.from_image(evil, "img\nname: z", "x"))
    data = yaml.safe_load(body)
    assert data["name"] == "x" and data["base_image"] == "debian:bookworm"
    assert all(line.startswith("#") or not line.strip() or ":" in line or line.startswith(" ") for line in
               body.splitlines())


@pytest.mark.parametrize("text, says", [
    ("@@os\n@@dpkg\n@@php\n@@end\n", "has no `php` on its PATH"),
    ("@@os\n@@php\n/usr/bin/php\n@@facts 1\nbroken php\n@@end\n", "`php` fails (exit status 1): broken php"),
    ("@@os\n@@php\n/usr/bin/php\n", "did not finish"),
])
def test_images_that_cannot_be_read_say_why(text, says):
    with pytest.raises(UsageError) as e:
        facts.parse(text, "img")
    assert says in e.value.message


def test_an_image_without_swoole_is_refused_unless_php_alone_is_asked():
    no_swoole = RELEASE.split("@@swoole", 1)[0] + "@@swoole\nExtension 'swoole' not present.\n@@end\n"
    f = facts.parse(no_swoole, "img")
    with pytest.raises(UsageError) as e:
        mapping.from_image(f, "img", "x")
    assert "has no Swoole" in e.value.message and "--php-only" in e.value.hint
    data = yaml.safe_load(writer.text(mapping.from_image(f, "img", "x", php_only=True)))
    assert "swoole" not in data


def test_a_php_net_php_on_another_os_is_built_from_its_release():
    f = release_facts()
    alpine = facts.ImageFacts(**{**f.__dict__, "os_id": "alpine", "os_codename": "", "debian_php": None,
                                 "debian_php_version": None, "php_version": "8.3.33"})
    plan = mapping.from_image(alpine, "php:8.3-alpine", "x")
    data = yaml.safe_load(writer.text(plan))
    assert data["php"]["version"] == "8.3.33" and "source" not in data["php"]
    assert data["base_image"] == "debian:bookworm" and "alpine" in plan.notes["base_image"][0]


@pytest.mark.parametrize("constraint, version, ok", [
    ("^8.2", "8.2.0", True), ("^8.2", "9.0.0", False), (">=8.1 <8.4", "8.3.1", True), (">=8.1 <8.4", "8.4.0", False),
    ("~8.2.0", "8.3.0", False), ("~8.2", "8.9.0", True), ("8.2.*", "8.2.5", True), ("^7.4 || ^8.0", "8.4.1", True),
    ("*", "8.1.0", True), (">=8.1,<8.3", "8.2.9", True), ("8.3", "8.3.7", True), ("^6.0", "6.2.2", True),
])
def test_composer_constraints(constraint, version, ok):
    assert composer.admits(constraint, version) is ok


def test_from_composer(tmp_path):
    path = tmp_path / "composer.json"
    path.write_text(json.dumps({"require": {"php": ">=8.3", "ext-swoole": "^6.0", "ext-redis": "*",
                                            "ext-mbstring": "*", "ext-json": "*"}}))
    body = writer.text(composer.from_composer(path, "shop"))
    data = yaml.safe_load(body)
    assert data["php"]["version"] == "8.3.33" and data["swoole"]["version"] == "6.2.2"
    assert "--enable-mbstring" in data["php"]["configure"] and "libonig-dev" in data["packages"]["build"]
    assert "ext-redis" in body.split("# Not reproduced:")[1]
    path.write_text(json.dumps({"require": {"php": "^7.4"}}))
    with pytest.raises(UsageError) as e:
        composer.from_composer(path, "shop")
    assert "admits none of the PHP lines" in e.value.message
    path.write_text("{not json")
    with pytest.raises(UsageError):
        composer.from_composer(path, "shop")


def cli(capsys, *args) -> tuple[int, str]:
    """The real entry point (errors become exit codes there): (exit code, stdout + stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main_with(list(args))
    captured = capsys.readouterr()
    return e.value.code, captured.out + captured.err


def main_with(args):
    import sys
    from asanlab.cli import main

    old, sys.argv = sys.argv, ["asanlab", *args]
    try:
        main()
    finally:
        sys.argv = old


def test_init_writes_the_default_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, said = cli(capsys, "init")
    assert code == 0, said
    assert "wrote asanlab.yml: PHP 8.2 (Debian's php8.2), Swoole 6.1.9" in said
    written = (tmp_path / "asanlab.yml").read_text()
    assert recipes.load(tmp_path / "asanlab.yml").php.source.debian == "php8.2"  # the default, and it loads
    code, said = cli(capsys, "init")
    assert code == 2 and "asanlab.yml exists: not overwritten" in said
    assert (tmp_path / "asanlab.yml").read_text() == written
    (tmp_path / "asanlab.yml").unlink()
    os.symlink(tmp_path / "target", tmp_path / "asanlab.yml")  # a link: refused, and --force replaces it
    assert cli(capsys, "init")[0] == 2
    assert cli(capsys, "init", "--force")[0] == 0
    assert not (tmp_path / "asanlab.yml").is_symlink() and not (tmp_path / "target").exists()


def test_init_from_a_missing_composer_file_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, said = cli(capsys, "init", "--from-composer", "nope.json")
    assert code == 2 and "nope.json" in said and not (tmp_path / "asanlab.yml").exists()


def test_project_file_discovery(tmp_path):
    app_dir = tmp_path / "srv"
    app_dir.mkdir()
    php = app_dir / "server.php"
    php.write_text("<?php")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = project.find(php, elsewhere)
    assert found.builtin and "built-in default" in found.why
    (app_dir / "asanlab.yml").write_text("x")
    found = project.find(php, elsewhere)
    assert found.path == app_dir / "asanlab.yml" and "app's folder" in found.why
    (elsewhere / "asanlab.yml").write_text("x")
    found = project.find(php, elsewhere)
    assert found.path == elsewhere / "asanlab.yml" and "current folder" in found.why
    # A link in the app's folder (a pull request's files) is not followed.
    (app_dir / "asanlab.yml").unlink()
    os.symlink(elsewhere / "asanlab.yml", app_dir / "asanlab.yml")
    assert project.find(php, tmp_path).builtin
