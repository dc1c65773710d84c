from pathlib import Path

import pytest

from asanlab.image import recipe, recipe_yaml
from asanlab.errors import EXIT_USAGE, RecipeError

REPO = Path(__file__).resolve().parents[2]


def problems(text: str, tmp_path: Path) -> list[str]:
    p = tmp_path / "r.yml"
    p.write_text(text)
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert e.value.exit_code == EXIT_USAGE
    return e.value.problems


def test_every_shipped_recipe_is_valid():
    paths = sorted((REPO / "recipes").glob("*.yml"))
    assert len(paths) >= 4
    for p in paths:
        r = recipe.load(p)
        assert r.name and r.php.version


def test_defaults(tmp_path):
    p = tmp_path / "r.yml"
    p.write_text('name: x\nphp:\n  version: "8.3.10"\n')
    r = recipe.load(p)
    assert r.base_image == "debian:bookworm"
    assert r.compiler_version == 14
    assert r.sanitizers == recipe.Sanitizers(address=True, leak=True, undefined=True)
    assert r.php.source.kind == "release" and r.php.debug is False and r.swoole is None


@pytest.mark.parametrize("base, clang", [("debian:bookworm", 14), ("debian:trixie", 19), ("debian:trixie-slim", 19),
                                         ("debian:13", 19), ("registry.example:5000/mirror/debian:trixie", 19),
                                         ("ubuntu:24.04", 14)])
def test_the_default_clang_follows_the_base_image(tmp_path, base, clang):
    p = tmp_path / "r.yml"
    p.write_text(f'name: x\nbase_image: "{base}"\nphp:\n  version: "8.4.10"\n')
    assert recipe.load(p).compiler_version == clang
    p.write_text(f'name: x\nbase_image: "{base}"\ncompiler:\n  version: 17\nphp:\n  version: "8.4.10"\n')
    assert recipe.load(p).compiler_version == 17  # said wins


def test_unknown_key_names_file_path_line_and_suggests(tmp_path):
    got = problems('name: x\nphp:\n  version: "8.2.1"\n  confgure: [--enable-x]\n', tmp_path)
    assert got == [f'{tmp_path / "r.yml"}:4: php.confgure: unknown key; did you mean "configure"?']


def test_wrong_type(tmp_path):
    got = problems('name: x\nphp:\n  version: "8.2.1"\n  debug: "yes"\n', tmp_path)
    assert len(got) == 1 and ":4: php.debug: expected boolean" in got[0]


@pytest.mark.parametrize("flag", ["--x; rm -rf /", "--with-a=$(id)", "-O2", "--a b", "--x=`id`", "--x='a'",
                                  "--x|y", "--x&", "--x>y"])
def test_configure_flags_with_shell_characters_are_refused(tmp_path, flag):
    got = problems(f'name: x\nphp:\n  version: "8.2.1"\n  configure:\n    - "{flag}"\n', tmp_path)
    assert len(got) == 1 and ":5: php.configure[0]:" in got[0] and "--name=value" in got[0]


def test_good_configure_flags(tmp_path):
    p = tmp_path / "r.yml"
    p.write_text('name: x\nphp:\n  version: "8.2.1"\n  configure: [--enable-sockets, --with-openssl=/usr, --with-curl]\n')
    assert recipe.load(p).php.configure == ("--enable-sockets", "--with-openssl=/usr", "--with-curl")


def test_swoole_php_compatibility(tmp_path):
    got = problems('name: x\nphp:\n  version: "8.4.1"\nswoole:\n  version: "5.1.8"\n', tmp_path)
    assert len(got) == 1 and ":5: swoole.version: Swoole 5.1.8 supports PHP 8.0 to 8.3, not PHP 8.4.1" in got[0]


def test_unknown_swoole_line(tmp_path):
    got = problems('name: x\nphp:\n  version: "8.2.1"\nswoole:\n  version: "3.0.0"\n', tmp_path)
    assert "unknown Swoole line 3.0" in got[0]


def test_path_escaping_the_recipe_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "r.yml"
    (tmp_path / "outside.tar.gz").write_bytes(b"x")
    p.write_text('name: x\nphp:\n  version: "8.2.1"\n  source:\n    path: ../outside.tar.gz\n')
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert ":5: php.source.path:" in e.value.problems[0] and "leaves the recipe's folder" in e.value.problems[0]


def test_absolute_path_refused(tmp_path):
    got = problems('name: x\nphp:\n  version: "8.2.1"\n  source:\n    path: /etc/passwd\n', tmp_path)
    assert "leaves the recipe's folder" in got[0]


def test_two_sources_at_once(tmp_path):
    got = problems('name: x\nphp:\n  version: "8.2.1"\n  source:\n    debian: php8.2\n    url: https://e.org/a.tar.xz\n',
                   tmp_path)
    assert "exactly one of url, path or debian" in got[0]


def test_leak_without_address(tmp_path):
    got = problems('name: x\nphp:\n  version: "8.2.1"\nsanitizers:\n  address: false\n', tmp_path)
    assert "sanitizers.leak" in got[0]


def test_duplicate_key(tmp_path):
    got = problems('name: x\nname: y\nphp:\n  version: "8.2.1"\n', tmp_path)
    assert got == [f"{tmp_path / 'r.yml'}:2: name: key given twice"]


def test_invalid_yaml(tmp_path):
    got = problems('name: x\nphp: [\n', tmp_path)
    assert "not valid YAML" in got[0]


def test_not_a_mapping(tmp_path):
    assert "a recipe is a YAML mapping" in problems("- a\n- b\n", tmp_path)[0]


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError) as e:
        recipe.load(tmp_path / "nope.yml")
    assert "recipe file not found" in str(e.value)


def test_several_problems_reported_together(tmp_path):
    got = problems('name: x\nphp:\n  version: 8.2\n  zts: 1\nextra: true\n', tmp_path)
    assert len(got) == 3


def test_suppressions_file(tmp_path):
    (tmp_path / "lsan.supp").write_text("# a comment\nleak:zend_register_functions\n\n")
    p = tmp_path / "r.yml"
    p.write_text('name: x\nphp:\n  version: "8.2.1"\nruntime:\n  suppressions: ["leak:foo"]\n'
                 '  suppressions_file: lsan.supp\n')
    assert recipe.load(p).runtime.suppressions == ("leak:foo", "leak:zend_register_functions")


def test_digest_changes_with_content(tmp_path):
    a = recipe.parse('name: x\nphp:\n  version: "8.2.1"\n')
    b = recipe.parse('name: x\nphp:\n  version: "8.2.2"\n')
    assert a.digest() != b.digest()
    assert a.digest() == recipe.parse('php:\n  version: "8.2.1"\nname: x\n').digest()


def test_shipped_recipes_name_published_php_releases():
    from asanlab.image import sources

    for p in sorted((REPO / "recipes").glob("*.yml")):
        r = recipe.load(p)
        if r.php.source.kind == "release":
            assert sources.published_php_sha256(r.php.version, f"php-{r.php.version}.tar.xz"), p.name


@pytest.mark.parametrize("where,text", [
    ("packages.build[0]", 'name: x\nphp:\n  version: "8.2.1"\npackages:\n  build: ["zlib1g-dev\\n", "libxml2-dev"]\n'),
    ("php.configure[0]", 'name: x\nphp:\n  version: "8.2.1"\n  configure: ["--with-zlib\\nRUN id"]\n'),
    ("php.version", 'name: x\nphp:\n  version: "8.2.1\\n"\n'),
    ("name", 'name: "x\\n"\nphp:\n  version: "8.2.1"\n'),
    ("base_image", 'name: x\nbase_image: "debian:bookworm\\n"\nphp:\n  version: "8.2.1"\n'),
])
def test_a_newline_in_any_value_is_refused(tmp_path, where, text):
    """A schema pattern is a search, and `$` matches before a final newline: the loader refuses
    control characters itself, in every string, before the schema."""
    got = problems(text, tmp_path)
    assert len(got) == 1 and f": {where}: " in got[0] and "control character" in got[0], got


def test_nested_aliases_are_refused_before_they_expand(tmp_path):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
    for i, prev in zip("bcdefghij", "abcdefghi"):
        bomb += f"{i}: &{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
    got = problems(bomb + 'name: x\nphp:\n  version: "8.2.1"\n', tmp_path)
    assert got == [f"{tmp_path / 'r.yml'}: more than 10000 values once YAML aliases are expanded; a recipe is small"]


def test_a_recipe_that_is_no_regular_file_is_refused_without_reading_it(tmp_path):
    import os

    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    for p, why in ((fifo, "not a regular file"), (tmp_path, "not a regular file")):
        with pytest.raises(RecipeError) as e:
            recipe.load(p)  # a FIFO would block a read forever
        assert why in e.value.problems[0]
    big = tmp_path / "big.yml"
    big.write_text("#" * (recipe_yaml.MAX_RECIPE_BYTES + 1))
    with pytest.raises(RecipeError, match="a recipe is at most"):
        recipe.load(big)


def test_a_bad_suppressions_line_is_refused_before_any_run(tmp_path):
    """LeakSanitizer stops at a line it cannot parse and then reports nothing: each line of the
    recipe's suppressions file is checked at load, and named by file and line."""
    (tmp_path / "lsan.supp").write_text("# ok\nleak:zend_register_functions\nleek:typo\n")
    got = problems('name: x\nphp:\n  version: "8.2.1"\nruntime:\n  suppressions_file: lsan.supp\n', tmp_path)
    assert len(got) == 1 and "runtime.suppressions_file: lsan.supp:3: 'leek:typo': expected leak:PATTERN" in got[0]
    (tmp_path / "dir.supp").mkdir()
    got = problems('name: x\nphp:\n  version: "8.2.1"\nruntime:\n  suppressions_file: dir.supp\n', tmp_path)
    assert "is not a regular file" in got[0]


@pytest.mark.parametrize("name", ["a..b", "a-", "-a", "A", "a__-b", "a" * 129, "a/b"])
def test_a_name_docker_would_refuse_is_refused(tmp_path, name):
    got = problems(f'name: "{name}"\nphp:\n  version: "8.2.1"\n', tmp_path)
    assert len(got) == 1 and ": name: " in got[0], got


@pytest.mark.parametrize("ref,ok", [("debian:bookworm", True), ("127.0.0.1:5000/asanlab/php8.2:sha-abc", True),
                                     ("ghcr.io/org/x@sha256:" + "a" * 64, True), ("a__b.c-d/e", True),
                                     ("Debian:bookworm", False), ("debian::x", False), ("debian:", False),
                                     ("a..b", False), ("x y", False), ("", False), ("e1a6ca5f26c0", True)])
def test_image_references_follow_dockers_grammar(ref, ok):
    from asanlab.image import references

    assert (references.problem(ref) is None) is ok, references.problem(ref)


def test_valgrind_and_asan_cannot_share_an_image():
    body = 'name: x\nphp:\n  version: "8.2.32"\ntools: [valgrind]\nsanitizers:\n  address: true\n'
    with pytest.raises(RecipeError) as e:
        recipe.parse(body)
    assert "<recipe>:4: tools: Valgrind cannot run a program built with AddressSanitizer" in str(e.value)


def test_tools_are_named_from_a_known_list():
    with pytest.raises(RecipeError) as e:
        recipe.parse('name: x\nphp:\n  version: "8.2.32"\ntools: [strace]\n')
    assert "tools[0]" in str(e.value) and "'gdb', 'valgrind'" in str(e.value)


def test_no_sanitizer_needs_a_tool():
    no_san = 'name: x\nphp:\n  version: "8.2.32"\nsanitizers:\n  address: false\n  leak: false\n  undefined: false\n'
    with pytest.raises(RecipeError, match="no sanitizer enabled.*tools: \\[gdb, valgrind\\]"):
        recipe.parse(no_san)
    assert recipe.parse(no_san + "tools: [gdb]\n").tools == ("gdb",)


@pytest.mark.parametrize("options, says", [
    ("asan_options: {halt_on_error: '0:log_path=/tmp/x'}", "runtime.asan_options.halt_on_error: value '0:log_path=/tmp/x' "
                                                            "holds ':', which separates sanitizer options"),
    ("lsan_options: {report_objects: '1,log_path=/x'}", "holds ','"),
    ("ubsan_options: {print_stacktrace: '1 log_path=/x'}", "holds ' '"),
    ("asan_options: {log_path: /tmp/x}", "runtime.asan_options.log_path: asanlab sets log_path itself"),
    ("lsan_options: {log_exe_name: 1}", "asanlab sets log_exe_name itself"),
])
def test_a_sanitizer_option_value_cannot_smuggle_in_another_option(tmp_path, options, says):
    """A value holding a separator appended options the recipe does not name (a second log_path
    gave 0 findings): refused, and nothing is built."""
    got = problems(f'name: x\nphp:\n  version: "8.2.1"\nruntime:\n  {options}\n', tmp_path)
    assert len(got) == 1 and says in got[0], got


def test_a_log_path_in_the_users_lsan_options_does_not_end_capture():
    from asanlab.run.environment import environment

    env = environment(None, {"LSAN_OPTIONS": "log_path=/tmp/elsewhere:report_objects=1",
                             "ASAN_OPTIONS": "log_path=/tmp/x"}, False)
    assert "log_path" not in env["LSAN_OPTIONS"] and "report_objects=1" in env["LSAN_OPTIONS"]
    assert "log_path=/asanlab/logs/sanitizer" in env["ASAN_OPTIONS"] and "/tmp/x" not in env["ASAN_OPTIONS"]


@pytest.mark.parametrize("version, untested", [("8.2.32", False), ("8.4.24", False), ("8.3.33", True), ("8.5.0", True)])
def test_a_php_line_the_agent_is_not_tested_on_is_said(tmp_path, version, untested):
    p = tmp_path / "r.yml"
    p.write_text(f'name: x\nphp:\n  version: "{version}"\n')
    why = recipe.agent_untested(recipe.load(p))
    assert (why is not None) == untested
    if untested:
        assert f"not tested on PHP {version[:3]} (tested: 8.2, 8.4)" in why
