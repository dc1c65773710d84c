from asanlab.image import recipe, render


def r(body: str):
    return recipe.parse(body)


PHP_ONLY = 'name: x\nphp:\n  version: "8.2.32"\n'
SWOOLE = PHP_ONLY + 'swoole:\n  version: "6.1.9"\n  configure: [--enable-sockets]\n'


def test_php_only_dockerfile():
    d = render.render(r(PHP_ONLY)).dockerfile
    assert "FROM debian:bookworm AS php-build" in d and "FROM debian:bookworm AS runtime" in d
    assert "--enable-debug" not in d  # PHP's assertions cost speed; php.debug: true turns them on
    for flag in ("--enable-address-sanitizer", "--enable-undefined-sanitizer", "--with-ffi",
                 "--without-valgrind"):
        assert flag in d
    assert "libclang-rt-14-dev" in d and "COPY sources/php-8.2.32.tar.xz" in d
    assert "AS ext-" not in d
    assert d.rstrip().splitlines()[-1].startswith("LABEL org.asanlab.version=")


def test_newer_php_has_no_valgrind_switch():
    d = render.render(r('name: x\nphp:\n  version: "8.4.1"\n  debug: false\n')).dockerfile
    assert "--without-valgrind" not in d and "--enable-debug" not in d


def make_lines(d: str) -> list[str]:
    return [line for line in d.splitlines() if "make -j" in line]


def test_optimize_level_is_given_to_make_for_php_and_every_extension_debug_or_not():
    # --enable-debug's configure replaces -O in CFLAGS by -O0: the level must come after, at make time.
    d = render.render(r(SWOOLE.replace("  version: \"8.2.32\"\n", "  version: \"8.2.32\"\n  debug: true\n"))).dockerfile
    assert "--enable-debug" in d
    lines = make_lines(d)
    assert len(lines) == 2
    for line in lines:
        assert 'EXTRA_CFLAGS="-O1 -fno-optimize-sibling-calls"' in line
        assert 'EXTRA_CXXFLAGS="-O1 -fno-optimize-sibling-calls"' in line
    d0 = render.render(r(SWOOLE.replace("name: x\n", "name: x\ncompiler: {optimize: 0}\n"))).dockerfile
    assert all('EXTRA_CFLAGS="-O0"' in line for line in make_lines(d0))
    assert render.render(r(SWOOLE)).digest != render.render(r(SWOOLE.replace("name: x\n", "name: x\ncompiler: {optimize: 0}\n"))).digest


def test_optimize_level_out_of_range_is_a_recipe_error():
    import pytest
    with pytest.raises(recipe.RecipeError) as e:
        r('name: x\ncompiler:\n  optimize: 4\nphp:\n  version: "8.2.1"\n')
    assert ":3: compiler.optimize:" in str(e.value)


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


def stage_starts(dockerfile: str) -> list[tuple[str, str]]:
    """(the image a stage starts FROM, its first instruction) for every stage."""
    starts, current = [], None
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            current = line.split()[1]
        elif current and line.strip() and not line.startswith("#"):
            starts.append((current, line))
            current = None
    return starts


def test_stages_from_the_same_image_start_differently():
    # The classic builder reuses the newest cached layer matching a step. Two stages with the same
    # FROM and the same first step (both once had ENV DEBIAN_FRONTEND) left, after a --no-cache
    # build, the runtime stage's copy newest: the next build with only Swoole changed rebuilt PHP.
    body = SWOOLE + 'extensions:\n  - {name: redis, version: "6.1.0"}\n'
    for text in (PHP_ONLY, SWOOLE, body):
        starts = stage_starts(render.render(r(text)).dockerfile)
        assert len(starts) == 4 + text.count("version:") - 1  # php-build, runtime-deps, agent, runtime + extensions
        assert len(set(starts)) == len(starts), starts


def test_swoole_under_asan_reports_its_stack_switches():
    d = render.render(r(SWOOLE)).dockerfile
    step = "RUN /opt/asanlab/scripts/swoole-asan-fibers.sh /usr/src/ext-swoole"
    assert step in d
    # Before phpize, in Swoole's own stage only.
    assert d.index("FROM php-build AS ext-swoole") < d.index(step) < d.index("/opt/php/bin/phpize")
    ubsan_only = SWOOLE + "sanitizers:\n  address: false\n  leak: false\n  undefined: true\n"
    assert "swoole-asan-fibers" not in render.render(r(ubsan_only)).dockerfile



def test_the_leak_switch_is_a_run_time_choice_with_one_image():
    """`sanitizers.leak` sets detect_leaks when a run starts: the image, its digest and its labels
    are the same either way."""
    with_leaks = render.render(r(PHP_ONLY))
    without = render.render(r(PHP_ONLY + "sanitizers:\n  leak: false\n"))
    assert with_leaks.digest == without.digest
    assert with_leaks.labels == without.labels and with_leaks.dockerfile == without.dockerfile
    assert with_leaks.labels["org.asanlab.sanitizers"] == "address,undefined"
    assert render.render(r(PHP_ONLY + "sanitizers:\n  undefined: false\n")).digest != with_leaks.digest


VALGRIND = SWOOLE + "tools: [valgrind, gdb]\n"


def test_a_valgrind_recipe_is_a_debug_image_without_sanitizers():
    rec = r(VALGRIND)
    assert (rec.sanitizers.address, rec.sanitizers.leak, rec.sanitizers.undefined) == (False, False, False)
    assert rec.tools == ("gdb", "valgrind")
    out = render.render(rec)
    d = out.dockerfile
    assert "-fsanitize" not in d and "--enable-address-sanitizer" not in d and "--enable-asan" not in d
    assert "swoole-asan-fibers" not in d  # ASan's stack-switch annotations: none to make
    assert d.count('CFLAGS="-g -gdwarf-4 -fno-omit-frame-pointer"') == 2  # PHP and Swoole: DWARF that Valgrind reads
    assert "--with-valgrind" in d and "--without-valgrind" not in d
    build_line = next(line for line in d.splitlines() if "apt-get install" in line)
    assert " valgrind" in build_line  # valgrind.h, so that Swoole registers its coroutine stacks
    assert 'grep -q "define HAVE_VALGRIND 1" config.h' in d
    runtime = [line for line in d.splitlines() if "apt-get install" in line][-1]
    assert " gdb" in runtime and " valgrind" in runtime
    assert "COPY --from=php-build /usr/src/php-src/.gdbinit /opt/asanlab/gdb/php.gdbinit" in d
    assert "COPY --from=ext-swoole /usr/src/ext-swoole/gdbinit /opt/asanlab/gdb/swoole.gdbinit" in d
    assert out.labels["org.asanlab.tools"] == "gdb,valgrind" and out.labels["org.asanlab.sanitizers"] == ""
    assert out.readable_tag.endswith("-gdb-valgrind")
    assert out.digest != render.render(r(SWOOLE)).digest


def test_gdb_alone_goes_into_an_asan_image():
    out = render.render(r(SWOOLE + "tools: [gdb]\n"))
    assert "-fsanitize=address" in out.dockerfile and "/opt/asanlab/gdb/php.gdbinit" in out.dockerfile
    assert "HAVE_VALGRIND" not in out.dockerfile and out.labels["org.asanlab.tools"] == "gdb"
    assert "org.asanlab.tools" in render.render(r(SWOOLE)).labels and render.render(r(SWOOLE)).labels["org.asanlab.tools"] == ""


def test_extensions_recover_from_misaligned_accesses_and_stop_at_other_undefined_behaviour():
    """Swoole unmasks every WebSocket frame with misaligned loads: a UBSan image that stopped there
    could not run a WebSocket server. The later -fsanitize-recover wins for alignment only."""
    flags = render.sanitizer_cflags(r(SWOOLE))
    assert flags.index("-fno-sanitize-recover=undefined") < flags.index("-fsanitize-recover=alignment")
    d = render.render(r(SWOOLE)).dockerfile
    swoole_stage = d[d.index("FROM php-build AS ext-swoole"):]
    assert "-fsanitize-recover=alignment" in swoole_stage.split("\nFROM ")[0]
    assert "-fsanitize-recover" not in " ".join(render.sanitizer_cflags(r(SWOOLE + "sanitizers:\n  undefined: false\n")))
