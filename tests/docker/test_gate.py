"""The CI gate against real sessions: --baseline and --fail-on any|new|none, with the baseline
given the way a CI job has it (the main branch's session folder, downloaded as an artifact)."""

import json
import re
import shutil

import pytest

from .conftest import asanlab

pytestmark = pytest.mark.docker

LEAKY = """<?php
$libc = FFI::cdef("void *malloc(size_t); void free(void *);");
function keep_cache(FFI $libc) { $libc->malloc(100); }  // the leak main already has
keep_cache($libc);
"""
WITH_NEW_BUG = LEAKY + """
function new_feature(FFI $libc) { $p = $libc->malloc(32); $libc->free($p); $libc->free($p); }
if (pcntl_fork() === 0) { new_feature($libc); exit(0); }
pcntl_wait($status);
"""


def app(folder, name, source):
    (folder / name).mkdir(exist_ok=True)
    (folder / name / "app.php").write_text(source)
    return f"{name}/app.php"


def test_gate_fails_only_on_new_findings(work, tmp_path):
    folder, env = work
    main = asanlab("run", app(folder, "gate-main", LEAKY), "--recipe", "php.yml", "--format", "json",
                   cwd=folder, env=env, check=1)
    main_id = json.loads(main.stdout)["session"]["id"]
    # An image as the baseline: its latest finished session here, which is main's.
    image_ref = json.loads(main.stdout)["session"]["image"]["ref"]
    asanlab("run", app(folder, "gate-image", LEAKY), "--recipe", "php.yml", "--baseline", image_ref,
            cwd=folder, env=env, check=0)
    # The CI artifact: the main branch's session folder, copied elsewhere.
    artifact = tmp_path / "main-session"
    shutil.copytree(folder / ".asanlab" / "sessions" / main_id, artifact)

    same = asanlab("run", app(folder, "gate-same", LEAKY), "--recipe", "php.yml", "--baseline", str(artifact),
                   cwd=folder, env=env, check=0)
    assert re.search(r"^0 finding\(s\): none$", same.stdout, re.M), same.stdout
    asanlab("run", "gate-same/app.php", "--recipe", "php.yml", "--baseline", str(artifact), "--fail-on", "any",
            cwd=folder, env=env, check=1)

    pr = asanlab("run", app(folder, "gate-pr", WITH_NEW_BUG), "--recipe", "php.yml", "--baseline", str(artifact),
                 "--format", "json", cwd=folder, env=env, check=1)
    new = json.loads(pr.stdout)["findings"]
    assert [f["kind"] for f in new] == ["double-free"]
    sarif = asanlab("run", "gate-pr/app.php", "--recipe", "php.yml", "--baseline", str(artifact), "--format", "sarif",
                    "--fail-on", "none", cwd=folder, env=env, check=0)
    results = json.loads(sarif.stdout)["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["double-free"]


def test_fail_on_new_needs_a_baseline(work):
    folder, env = work
    proc = asanlab("run", "gate-main/app.php", "--recipe", "php.yml", "--fail-on", "new", cwd=folder, env=env, check=2)
    assert "--baseline" in proc.stderr


def test_run_with_a_suppressions_file(work, tmp_path):
    folder, env = work
    supp = tmp_path / "ffi.supp"
    supp.write_text("# FFI allocations are the app's own business here\nleak:zif_ffi_trampoline\n")
    proc = asanlab("run", app(folder, "gate-supp", LEAKY), "--recipe", "php.yml", "--suppressions", str(supp),
                   "--format", "json", cwd=folder, env=env, check=0)
    out = json.loads(proc.stdout)
    assert not [f for f in out["findings"] if f["category"] == "leak"]
    # The rule names a frame below libffi, where frame pointers stop: the stacks were unwound whole.
    assert "so that suppression rules see every frame" in proc.stderr and out["session"]["stacks"] == "full"
    # LeakSanitizer applied it in the container: its log says which rule matched.
    sdir = folder / ".asanlab" / "sessions" / out["session"]["id"]
    assert "leak:zif_ffi_trampoline" in (sdir / "config" / "lsan.supp").read_text()
    assert any("Suppressions used" in f.read_text() for f in (sdir / "raw" / "sanitizer").iterdir())
