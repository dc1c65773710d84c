"""The manual: its generated references are what the code says now, it builds with MkDocs in strict
mode, its links and the README's lead to files that exist, the README stays short, and nothing in
the repository points at notes kept outside it."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README_MAX_LINES = 220
# Written in two parts so that this file does not name what it looks for.
OUTSIDE_NOTES = "FIELD" + "-NOTES"


def test_generated_reference_is_up_to_date(tmp_path):
    proc = subprocess.run([sys.executable, str(DOCS / "gen_reference.py"), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    committed = {p.name: p.read_bytes() for p in (DOCS / "reference").glob("*.md")}
    generated = {p.name: p.read_bytes() for p in tmp_path.glob("*.md")}
    stale = sorted(n for n in committed.keys() | generated.keys() if committed.get(n) != generated.get(n))
    assert not stale, f"docs/reference is stale: run make docs ({', '.join(stale)} differ)"


def test_generated_reference_does_not_depend_on_the_terminal(tmp_path):
    """Same bytes whatever the terminal's width: help texts are not rewrapped."""
    outs = []
    for columns in ("40", "300"):
        out = tmp_path / columns
        env = {**os.environ, "COLUMNS": columns}
        proc = subprocess.run([sys.executable, str(DOCS / "gen_reference.py"), str(out)],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append({p.name: p.read_bytes() for p in out.glob("*.md")})
    assert outs[0] == outs[1]
    text = b"".join(outs[0].values()).decode()
    assert str(REPO) not in text and str(tmp_path) not in text


def test_manual_builds_in_strict_mode(tmp_path):
    assert importlib.util.find_spec("mkdocs"), "mkdocs is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}{proc.stderr}"


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): "
                                            "move the detail into docs/")


FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


MARKDOWN = [REPO / "README.md"] + sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_files_in_the_repository(path):
    broken = []
    for target in relative_links(path):
        file = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (path.parent / file).resolve()
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)}: links to nothing in the repository: {broken}"


def test_link_finder_finds_links():
    """The check above would pass on a finder that finds nothing."""
    assert "docs/commands/run.md" in relative_links(REPO / "README.md")
    assert "reference/cli.md" in relative_links(DOCS / "index.md")


def test_nothing_refers_to_notes_outside_the_repository():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the files of the repository are not known")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, cwd=REPO, check=True).stdout.decode().split("\0")
    found = []
    for name in filter(None, listed):
        path = REPO / name
        if path.is_file() and not path.is_symlink() and OUTSIDE_NOTES.encode() in path.read_bytes():
            found.append(name)
    assert not found, (f"these files refer to {OUTSIDE_NOTES}, notes outside the repository: say the fact and "
                       f"its source instead: {', '.join(sorted(found))}")
