from asanlab import recipe, render


def r(body: str):
    return recipe.parse(body)


PHP_ONLY = 'name: x\nphp:\n  version: "8.2.32"\n'
SWOOLE = PHP_ONLY + 'swoole:\n  version: "6.1.9"\n  configure: [--enable-sockets]\n'


def test_php_only_dockerfile():
    d = render.render(r(PHP_ONLY)).dockerfile
    assert "FROM debian:bookworm AS php-build" in d and "FROM debian:bookworm AS runtime" in d
    for flag in ("--enable-address-sanitizer", "--enable-undefined-sanitizer", "--enable-debug", "--with-ffi",
                 "--without-valgrind"):
        assert flag in d
    assert "libclang-rt-14-dev" in d and "COPY sources/php-8.2.32.tar.xz" in d
    assert "AS ext-" not in d
    assert d.rstrip().splitlines()[-1].startswith("LABEL org.asanlab.version=")


def test_newer_php_has_no_valgrind_switch_and_release_is_O1():
    d = render.render(r('name: x\nphp:\n  version: "8.4.1"\n  debug: false\n')).dockerfile
    assert "--without-valgrind" not in d and "--enable-debug" not in d and "-O1" in d


def test_swoole_stage_gets_the_sanitizer_flags():
    d = render.render(r(SWOOLE)).dockerfile
    stage = d[d.index("FROM php-build AS ext-swoole"):d.index("AS runtime-deps")]
    assert "-fsanitize=address" in stage and "-fsanitize=undefined" in stage
    assert 'CXXFLAGS="-g -fno-omit-frame-pointer -fsanitize=address' in stage and "-fno-sanitize=vptr" in stage
    assert "--enable-sockets --enable-asan" in stage and "extension=swoole" in stage
    assert "FROM ext-swoole AS runtime-deps" in d


def test_debian_source():
    d = render.render(r('name: x\nphp:\n  version: "8.2"\n  source:\n    debian: php8.2\n')).dockerfile
    assert "fetch-debian-source.sh php8.2 /usr/src/php-src" in d and "COPY sources/" not in d


def test_digest_is_stable_and_follows_content():
    a, b = render.render(r(SWOOLE)), render.render(r(SWOOLE))
    assert a.digest == b.digest and a.image_ref == b.image_ref
    c = render.render(r(SWOOLE.replace("6.1.9", "6.1.8")))
    assert c.digest != a.digest and c.readable_tag == "php8.2.32-swoole6.1.8-asan-ubsan"
    # The PHP stage is the same text: Docker's cache reuses it when only Swoole changes.
    assert a.dockerfile.split("AS ext-swoole")[0] == c.dockerfile.split("AS ext-swoole")[0]


def test_context_tar_is_reproducible():
    x = render.render(r(PHP_ONLY))
    assert x.context_tar().getvalue() == x.context_tar().getvalue()
