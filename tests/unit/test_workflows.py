"""The workflow files in the repository, linted against GitHub's and GitLab's published schemas
(check-jsonschema's bundled copies: no network), and what they call checked to exist."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GITHUB = sorted((REPO / ".github" / "workflows").glob("*.yml")) + [REPO / "recipes" / "ci" / "github-actions.yml"]
GITLAB = [REPO / "recipes" / "ci" / "gitlab-ci.yml"]


def lint(schema: str, *files: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is a test dependency: pip install -e '.[test]'"
    return subprocess.run([exe, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True)


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_workflows_are_valid(path):
    proc = lint("vendor.github-workflows", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gitlab_example_is_valid():
    proc = lint("vendor.gitlab-ci", *GITLAB)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_linter_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(GITHUB[0].read_text().replace("runs-on:", "runs_on:", 1))
    assert lint("vendor.github-workflows", broken).returncode != 0


def test_release_matrix_expands_from_the_recipe(cli):
    proc = cli("matrix", "recipes/matrix.yml", "--format", "github", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    cells = json.loads(proc.stdout)["include"]
    assert len(cells) == 8 and "skipped swoole-php8.4.24-swoole5.1.8" in proc.stderr
    assert "recipes/matrix.yml" in (REPO / ".github" / "workflows" / "release.yml").read_text()
