"""The CI gate (asanlab/reports/gate.py) on real sanitizer reports: the pure rule, the baseline loading,
and --fail-on/--baseline as report, replay, soak and reproduce offer them (typer's CliRunner, no Docker)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asanlab.reports import gate
from asanlab import session
from asanlab.cli import app
from asanlab.errors import EXIT_FINDINGS, EXIT_OK, DockerUnavailable, SessionError, UsageError
from asanlab.reports.findings import group
from asanlab.reports.gate import FailOn
from asanlab.reports.sanitizers import parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOUBLE_FREE = FIXTURES / "reports" / "double-free.log"  # one ASan error
LEAK = FIXTURES / "reports" / "leak.log"  # two FFI leaks: the app's own
# A clean Swoole master's set-up closure, held until exit: a start-up leak, which never fails.
STARTUP = FIXTURES / "swoole" / "master-set-up-closure.log"


def found(*paths: Path):
    return group([r for p in paths for r in parse(p.read_text(), p.name)])


def no_docker():
    raise AssertionError("a session reference must not need Docker")


# The pure rule.

@pytest.mark.parametrize("fail_on,code", [(None, EXIT_FINDINGS), (FailOn.any, EXIT_FINDINGS), (FailOn.none, EXIT_OK)])
def test_without_a_baseline_every_finding_is_shown(fail_on, code):
    findings = found(DOUBLE_FREE, LEAK)
    outcome = gate.decide(findings, None, fail_on)
    assert outcome.shown == findings and len(outcome.shown) == 3
    assert outcome.exit_code == code
    assert outcome.policy is (fail_on or FailOn.any)


def test_fail_on_new_without_a_baseline_is_a_usage_error():
    with pytest.raises(UsageError, match="--fail-on new needs --baseline"):
        gate.decide(found(DOUBLE_FREE), None, FailOn.new)
    with pytest.raises(UsageError):
        gate.policy_for("new", has_baseline=False)


def test_with_a_baseline_only_what_it_lacks_is_shown_and_fails_by_default():
    outcome = gate.decide(found(DOUBLE_FREE, LEAK), baseline=found(LEAK))
    assert outcome.policy is FailOn.new
    assert [f.kind for f in outcome.shown] == ["double-free"]
    assert outcome.exit_code == EXIT_FINDINGS


@pytest.mark.parametrize("fail_on,code", [(None, EXIT_OK), (FailOn.new, EXIT_OK), (FailOn.any, EXIT_FINDINGS),
                                          (FailOn.none, EXIT_OK)])
def test_findings_the_baseline_already_has(fail_on, code):
    """Nothing new: new passes, any still fails on what was found (the baseline only trims the
    output), none passes."""
    outcome = gate.decide(found(LEAK), baseline=found(LEAK), fail_on=fail_on)
    assert outcome.shown == []
    assert outcome.exit_code == code


def test_a_count_that_grew_is_new():
    twice = found(LEAK, LEAK)
    outcome = gate.decide(twice, baseline=found(LEAK), fail_on=FailOn.new)
    assert [f.count for f in outcome.shown] == [2, 2]
    assert outcome.exit_code == EXIT_FINDINGS


def test_an_empty_baseline_is_still_a_baseline():
    """A clean main branch: every finding is new, and new is the default."""
    findings = found(DOUBLE_FREE)
    outcome = gate.decide(findings, baseline=[])
    assert outcome.policy is FailOn.new and outcome.shown == findings and outcome.exit_code == EXIT_FINDINGS


@pytest.mark.parametrize("fail_on", [FailOn.any, FailOn.new, FailOn.none])
def test_start_up_leaks_never_fail(fail_on):
    startup = found(STARTUP)
    assert [f.category for f in startup] == ["startup-leak"]
    baseline = [] if fail_on is FailOn.new else None
    outcome = gate.decide(startup, baseline, fail_on)
    assert outcome.shown == startup  # still shown (text folds it; --all lists it)
    assert outcome.exit_code == EXIT_OK


@pytest.mark.parametrize("fail_on,baseline,code", [(None, None, EXIT_FINDINGS), (FailOn.any, None, EXIT_FINDINGS),
                                                   (FailOn.new, [], EXIT_FINDINGS), (FailOn.none, None, EXIT_OK),
                                                   (FailOn.none, [], EXIT_OK)])
def test_a_soak_leak_verdict_fails_unless_none(fail_on, baseline, code):
    assert gate.decide([], baseline, fail_on, soak={"verdict": "LEAK"}).exit_code == code


def soaked(verdict, low, high):
    return {"verdict": verdict, "bytes_per_request": (low + high) / 2, "interval": [low, high]}


@pytest.mark.parametrize("before,now,code", [
    (soaked("STABLE", -1, 1), soaked("LEAK", 600, 700), EXIT_FINDINGS),  # the leak is new
    (None, soaked("LEAK", 600, 700), EXIT_FINDINGS),  # the baseline was no soak: nothing to compare
    (soaked("LEAK", 600, 700), soaked("LEAK", 620, 720), EXIT_OK),  # the same leak: not new
    (soaked("LEAK", 600, 700), soaked("LEAK", 1300, 1400), EXIT_FINDINGS),  # it grew: new, as a count that grew
    (soaked("LEAK", 600, 700), soaked("STABLE", -1, 1), EXIT_OK),
])
def test_under_new_a_soak_leak_is_judged_against_the_baselines_soak(before, now, code):
    outcome = gate.decide([], gate.Baseline([], before), FailOn.new, soak=now)
    assert outcome.exit_code == code
    assert (outcome.note is not None) == (before is not None and before["verdict"] == now["verdict"] == "LEAK"
                                          and code == EXIT_OK)
    if outcome.note:
        assert outcome.note == "the baseline's soak leaked too (650.0 B/request there): this LEAK is not new"
    # any fails on the LEAK whatever the baseline says; none never fails.
    assert gate.decide([], gate.Baseline([], before), FailOn.any, soak=now).exit_code == \
        (EXIT_FINDINGS if now["verdict"] == "LEAK" else EXIT_OK)
    assert gate.decide([], gate.Baseline([], before), FailOn.none, soak=now).exit_code == EXIT_OK


def test_policy_given_as_text():
    assert gate.decide(found(DOUBLE_FREE), None, "none").exit_code == EXIT_OK


def test_the_gate_imports_without_the_cli_typer_or_docker():
    code = ("import sys; sys.modules['typer'] = sys.modules['docker'] = None; import asanlab.reports.gate; "
            "assert 'asanlab.cli' not in sys.modules, 'cli imported'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# The baseline.

def recorded(*logs: Path, **info) -> session.Session:
    s = session.create({"command": ["php", "/app/a.php"], **info})
    for n, log in enumerate(logs, 1):
        (s.sanitizer_dir / f"sanitizer.{n}").write_text(log.read_text())
    return s


def test_a_session_baseline_never_asks_docker(state):
    s = recorded(LEAK)
    by_id = gate.load_baseline(s.id, no_docker)
    by_folder = gate.load_baseline(str(s.path), no_docker)
    assert [f.signature for f in by_id.findings] == [f.signature for f in by_folder.findings] \
        == [f.signature for f in found(LEAK)]
    assert by_id.soak is None  # not a soak


def test_a_soak_baseline_brings_its_stored_analysis_and_is_left_as_it_was(state):
    s = recorded(kind="soak")
    (s.path / "soak").mkdir()
    stored = soaked("LEAK", 600, 700)
    (s.path / "soak" / "analysis.json").write_text(json.dumps(stored))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in s.path.rglob("*"))
    assert gate.load_baseline(s.id, no_docker).soak == stored
    assert sorted((p.name, p.stat().st_mtime_ns) for p in s.path.rglob("*")) == before


def test_an_unknown_reference_without_docker_is_a_missing_session(state):
    def unavailable():
        raise DockerUnavailable("no daemon")

    with pytest.raises(SessionError, match="no session 'nope'"):
        gate.load_baseline("nope", unavailable)


class FakeImages:
    def __init__(self, known: dict):
        self.known = known

    def get(self, ref):
        from docker.errors import ImageNotFound

        if ref not in self.known:
            raise ImageNotFound(ref)
        return type("Image", (), {"id": self.known[ref]})()


class FakeDocker:
    def __init__(self, known: dict):
        self.images = FakeImages(known)


def test_an_image_baseline_is_its_latest_finished_session(state):
    older = recorded(DOUBLE_FREE, image={"id": "sha256:aaa"}, status="finished")
    # Ids are made to the second: date this one back so that "latest" is not a coin toss.
    older.path.rename(session.sessions_dir() / "20000101-000000-0000")
    recorded(LEAK, image={"id": "sha256:aaa"}, status="finished")
    recorded(DOUBLE_FREE, LEAK, image={"id": "sha256:aaa"})  # still running: not a baseline
    recorded(DOUBLE_FREE, image={"id": "sha256:bbb"}, status="finished")  # another image
    docker = FakeDocker({"asanlab/php:8.2": "sha256:aaa"})
    baseline = gate.load_baseline("asanlab/php:8.2", lambda: docker)
    assert [f.signature for f in baseline.findings] == [f.signature for f in found(LEAK)]
    with pytest.raises(SessionError, match="no session 'other:1'"):
        gate.load_baseline("other:1", lambda: docker)


# The commands.

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_report_fail_on_none_exits_0_with_findings():
    result = invoke("report", DOUBLE_FREE, "--fail-on", "none")
    assert result.exit_code == EXIT_OK, result.output
    assert "1 finding(s): 1 error" in result.stdout and "ERROR double-free" in result.stdout


def test_report_fail_on_any_exits_1():
    result = invoke("report", DOUBLE_FREE, "--fail-on", "any")
    assert result.exit_code == EXIT_FINDINGS, result.output
    assert "ERROR double-free" in result.stdout
    assert invoke("report", DOUBLE_FREE).exit_code == EXIT_FINDINGS  # any is the default without a baseline


def test_report_of_start_up_leaks_only_passes():
    assert invoke("report", STARTUP, "--fail-on", "any").exit_code == EXIT_OK


def test_report_fail_on_new_needs_a_baseline():
    result = invoke("report", DOUBLE_FREE, "--fail-on", "new")
    assert isinstance(result.exception, UsageError) and "--baseline" in result.exception.message
    assert "finding" not in result.stdout  # refused before any log was read


def test_report_against_a_baseline_session(state):
    main = recorded(LEAK)
    pr = invoke("report", LEAK, DOUBLE_FREE, "--baseline", main.path, "--format", "json")
    assert pr.exit_code == EXIT_FINDINGS, pr.output
    assert [f["kind"] for f in json.loads(pr.stdout)["findings"]] == ["double-free"]
    same = invoke("report", LEAK, "--baseline", main.id)
    assert same.exit_code == EXIT_OK and "0 finding(s)" in same.stdout
    assert invoke("report", LEAK, "--baseline", main.id, "--fail-on", "any").exit_code == EXIT_FINDINGS
    assert invoke("report", LEAK, DOUBLE_FREE, "--baseline", main.id, "--fail-on", "none").exit_code == EXIT_OK


def test_replay_fail_on(state):
    s = recorded(DOUBLE_FREE)
    assert invoke("replay", s.id).exit_code == EXIT_FINDINGS
    assert invoke("replay", s.id, "--fail-on", "none").exit_code == EXIT_OK
    assert invoke("replay", s.id, "--baseline", s.id).exit_code == EXIT_OK  # nothing new
    assert invoke("replay", s.id, "--baseline", s.id, "--fail-on", "any").exit_code == EXIT_FINDINGS
    assert isinstance(invoke("replay", s.id, "--fail-on", "new").exception, UsageError)


def test_replay_of_a_leaking_soak(state, monkeypatch):
    """A soak's LEAK verdict exits 1 with no sanitizer finding at all; --fail-on none exits 0."""
    import asanlab.soak.driver

    monkeypatch.setattr(asanlab.soak.driver, "soak_result", lambda s: {"verdict": "LEAK"})
    s = recorded(kind="soak")
    assert invoke("replay", s.id, "--format", "json").exit_code == EXIT_FINDINGS
    assert invoke("replay", s.id, "--format", "json", "--baseline", s.id).exit_code == EXIT_FINDINGS
    assert invoke("replay", s.id, "--format", "json", "--fail-on", "none").exit_code == EXIT_OK


def test_replay_of_a_soak_that_leaked_as_its_baseline_did(state, monkeypatch):
    import asanlab.soak.driver

    monkeypatch.setattr(asanlab.soak.driver, "soak_result", lambda s: soaked("LEAK", 610, 690))
    main = recorded(kind="soak")
    (main.path / "soak").mkdir()
    (main.path / "soak" / "analysis.json").write_text(json.dumps(soaked("LEAK", 600, 700)))
    pr = recorded(kind="soak")
    result = invoke("replay", pr.id, "--format", "json", "--baseline", main.id)
    assert result.exit_code == EXIT_OK, result.output
    assert "this LEAK is not new" in result.stderr
    assert invoke("replay", pr.id, "--format", "json", "--baseline", main.id, "--fail-on", "any").exit_code \
        == EXIT_FINDINGS


def test_soak_refuses_a_wrong_gate_before_docker(state, monkeypatch, tmp_path):
    import asanlab.cli.soaking

    def unavailable():  # an unknown reference may be an image: the gate asks, and there is no daemon
        raise DockerUnavailable("no daemon")

    monkeypatch.setattr(asanlab.cli.soaking, "client", unavailable)
    (tmp_path / "x.php").write_text("<?php\n")
    common = ["soak", tmp_path / "x.php", "--image", "x", "--url", "http://127.0.0.1:9501/"]
    result = invoke(*common, "--fail-on", "new")
    assert isinstance(result.exception, UsageError), result.exception
    assert result.exception.message == "--fail-on new needs --baseline SESSION: new compared with what?"
    result = invoke(*common, "--baseline", "20000101-000000-0000")
    assert isinstance(result.exception, SessionError), result.exception
    assert not session.sessions_dir().exists() or not any(session.sessions_dir().iterdir())  # nothing started


def test_reproduce_gates_the_findings_that_came_back(state, monkeypatch, tmp_path):
    """reproduce's exit code comes from the gate: a finding the baseline has too passes under new."""
    import asanlab.cli.reproducing
    import asanlab.reproduce.target as target
    from asanlab.run import traffic

    app_file = tmp_path / "a.php"
    app_file.write_text("<?php\n")
    rec = recorded(DOUBLE_FREE, app=str(app_file))
    (rec.path / "traffic").mkdir()
    (rec.path / "traffic" / traffic.FILE).write_text('{"c": 1, "t": 0, "in": "R0VUIC8gSFRUUC8xLjENCg0K"}\n')
    main = recorded(DOUBLE_FREE)

    def came_back(t, *, runs):
        out = target.Outcome(runs=runs, original=[f.signature for f in found(DOUBLE_FREE)])
        for f in found(DOUBLE_FREE):
            out.seen[f.signature], out.findings[f.signature] = runs, f
        return out

    monkeypatch.setattr(asanlab.cli.reproducing, "client", lambda: None)
    monkeypatch.setattr(asanlab.cli.reproducing, "_image", lambda *a: ("img", "sha256:1", None))
    monkeypatch.setattr(asanlab.cli.reproducing, "preloaded", lambda *a, **k: (None, None))
    monkeypatch.setattr(target, "reproduce", came_back)
    assert invoke("reproduce", rec.id, "--runs", 2).exit_code == EXIT_FINDINGS
    assert invoke("reproduce", rec.id, "--runs", 2, "--fail-on", "none").exit_code == EXIT_OK
    same = invoke("reproduce", rec.id, "--runs", 2, "--baseline", main.id)
    assert same.exit_code == EXIT_OK and "(in the baseline)" in same.stdout, same.output
    as_json = invoke("reproduce", rec.id, "--format", "json", "--baseline", main.id)
    assert json.loads(as_json.stdout)["new"] == []
    assert invoke("reproduce", rec.id, "--baseline", main.id, "--fail-on", "any").exit_code == EXIT_FINDINGS
    clean = recorded()
    assert invoke("reproduce", rec.id, "--baseline", clean.id).exit_code == EXIT_FINDINGS
    refused = invoke("reproduce", rec.id, "--minimize", "x", "--baseline", main.id)
    assert isinstance(refused.exception, UsageError) and "--minimize" in refused.exception.message


def test_help_offers_the_gate_wherever_findings_are_produced():
    for command in ("run", "soak", "reproduce", "replay", "report"):
        result = invoke(command, "--help")
        assert "--fail-on" in result.stdout and "--baseline" in result.stdout, command


def test_run_refuses_fail_on_new_without_a_baseline_before_docker(tmp_path, monkeypatch):
    """Unchanged by the move to gate.py: the flag is checked before any image is looked up."""
    import asanlab.cli.running

    monkeypatch.setattr(asanlab.cli.running, "client", no_docker)
    (tmp_path / "x.php").write_text("<?php\n")
    result = invoke("run", tmp_path / "x.php", "--image", "x", "--fail-on", "new")
    assert isinstance(result.exception, UsageError), result.exception
    assert result.exception.message == "--fail-on new needs --baseline SESSION: new compared with what?"


def test_a_run_unwinds_as_its_baseline_did():
    """A leak's signature is its allocation stack: compared with a baseline whose stacks were
    unwound completely, a run unwinds completely too (and says so), else its FFI leaks look new."""
    from asanlab.cli.common import full_stacks_for
    from asanlab.reports.gate import Baseline
    from asanlab.session import stacks_of

    assert stacks_of({"stacks": "fast"}) == "fast" and stacks_of({"stacks": "full"}) == "full"
    # Sessions from before asanlab kept it: run's unwound completely, a soak's with frame pointers.
    assert stacks_of({"kind": "run"}) == "full"
    assert stacks_of({"kind": "soak", "soak": {"full_stacks": False}}) == "fast"
    assert stacks_of({"kind": "soak", "soak": {"full_stacks": True}}) == "full"
    assert full_stacks_for(False, None) is False and full_stacks_for(True, None) is True
    assert full_stacks_for(False, Baseline([], stacks="fast")) is False
    assert full_stacks_for(False, Baseline([], stacks="full")) is True
    # Suppression rules match any frame of the allocation stack: all of it is unwound for them.
    assert full_stacks_for(False, None, ["leak:zif_ffi_trampoline"]) is True


def test_report_says_once_when_logs_are_unsymbolized(tmp_path):
    """The real double-free report with its function names and locations taken out, as a run
    without llvm-symbolizer writes it: said once, with the way to symbolize; a symbolized log is not."""
    import re

    text = Path(DOUBLE_FREE).read_text()
    stripped = "\n".join(re.sub(r"^(\s+#\d+ 0x[0-9a-f]+) in \S+ (/usr/src\S*|\()", r"\1  \2", line)
                         for line in text.splitlines())
    stripped = re.sub(r"  /usr/src\S*", "", stripped)
    (tmp_path / "sanitizer.1").write_text(stripped)
    plain = invoke("report", tmp_path)
    assert plain.output.count("not symbolized (module+offset)") == 1 and "--image IMAGE" in plain.output
    assert "not symbolized" not in invoke("report", DOUBLE_FREE).output
    both = invoke("report", tmp_path, "--image", "x", "--recipe", "y.yml")
    assert isinstance(both.exception, UsageError)
