"""A recipe's matrix: expansion, incompatible pairs skipped with the reason, the CI job matrix."""

import json

import pytest

from asanlab.image import recipe as recipes
from asanlab.errors import RecipeError

BASE = 'name: ci\nphp:\n  version: "8.2.32"\nswoole:\n  version: "6.1.9"\n'


def write(tmp_path, body):
    path = tmp_path / "m.yml"
    path.write_text(body)
    return path


def test_expansion_skips_incompatible_pairs_with_the_reason(tmp_path):
    path = write(tmp_path, BASE + 'matrix:\n  php: ["8.2.32", "8.4.24"]\n  swoole: ["5.1.8", "6.2.2"]\n')
    cells = recipes.expand(recipes.load(path))
    assert [c.name for c in cells] == ["ci-php8.2.32-swoole5.1.8-asan-ubsan", "ci-php8.2.32-swoole6.2.2-asan-ubsan",
                                       "ci-php8.4.24-swoole5.1.8-asan-ubsan", "ci-php8.4.24-swoole6.2.2-asan-ubsan"]
    skipped = [c for c in cells if c.skipped]
    assert [c.name for c in skipped] == ["ci-php8.4.24-swoole5.1.8-asan-ubsan"]
    assert "supports PHP 8.0 to 8.3" in skipped[0].skipped
    built = cells[1].recipe
    assert (built.php.version, built.swoole.version, built.name) == ("8.2.32", "6.2.2", cells[1].name)


def test_sanitizer_axis_and_distinct_images(tmp_path):
    from asanlab.image.render import render

    path = write(tmp_path, 'name: ci\nphp:\n  version: "8.2.32"\nmatrix:\n  sanitizers:\n'
                           "    - {address: true, leak: true, undefined: false}\n"
                           "    - {address: false, leak: false, undefined: true}\n")
    cells = recipes.expand(recipes.load(path))
    assert [c.axes["sanitizers"] for c in cells] == ["asan", "ubsan"]
    tags = {render(c.recipe).content_tag for c in cells}
    assert len(tags) == 2


def test_no_matrix_is_one_cell(tmp_path):
    r = recipes.load(write(tmp_path, BASE))
    assert [(c.name, c.recipe) for c in recipes.expand(r)] == [("ci", r)]


@pytest.mark.parametrize("body,needle", [
    (BASE + "matrix:\n  php: []\n", "matrix.php"),
    (BASE + "matrix:\n  pgp: [\"8.2.32\"]\n", "did you mean"),
    ('name: ci\nphp:\n  version: "8.2.32"\n  source:\n    debian: php8.2\nmatrix:\n  php: ["8.3.33"]\n',
     "drop it so that each version"),
])
def test_bad_matrix_is_a_recipe_error(tmp_path, body, needle):
    with pytest.raises(RecipeError) as e:
        recipes.load(write(tmp_path, body))
    assert needle in str(e.value)


def test_matrix_command_prints_a_github_job_matrix(tmp_path, cli):
    path = write(tmp_path, BASE + 'matrix:\n  php: ["8.3.33", "8.4.24"]\n  swoole: ["5.1.8"]\n')
    proc = cli("matrix", path, "--format", "github")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == {"include": [{"cell": "ci-php8.3.33-swoole5.1.8-asan-ubsan", "php": "8.3.33", "swoole": "5.1.8",
                                 "sanitizers": "asan-ubsan"}]}
    assert "skipped ci-php8.4.24-swoole5.1.8-asan-ubsan" in proc.stderr
