"""`asanlab soak` for real: a prefork PHP HTTP server (master + 2 workers) in the ASan image,
leaking a known number of bytes per request through FFI, or nothing; exact request counts from
h2load and from the built-in client; memory from /proc and from the agent inside each process;
the traffic recorded (--record) and a soak gated against a baseline soak."""

import json
import shutil

import pytest

from .conftest import free_port, REPO, asanlab, containers_of, without_agent

pytestmark = pytest.mark.docker

SERVER = REPO / "tests" / "fixtures" / "apps" / "prefork-server.php"



def soak(folder, env, name: str, leak: int, *extra: str, check: int):
    (folder / name).mkdir(exist_ok=True)
    shutil.copy(SERVER, folder / name / "app.php")
    port = free_port()
    return asanlab("soak", f"{name}/app.php", "--recipe", "php.yml", "-p", f"{port}:8080",
                   "-e", f"LEAK_BYTES={leak}", "-e", "WORKERS=2", "--url", f"http://127.0.0.1:{port}/orders",
                   "--checkpoints", "1000,5000,20000", "--format", "json", *extra, cwd=folder, env=env, check=check)


@pytest.fixture(scope="module")
def leaking(work):
    folder, env = work
    # --full-stacks: the FFI call goes through libffi, which has no frame pointers.
    proc = soak(folder, env, "leaky", 100, "--full-stacks", check=1)
    return json.loads(proc.stdout), proc


def test_leak_is_found_with_its_rate_and_allocation_site(leaking, work, docker_client):
    out, proc = leaking
    a = out["soak"]
    assert a["verdict"] == "LEAK" and a["metric"] == "allocated"
    assert a["bytes_per_request"] == pytest.approx(100, rel=0.10)
    assert a["load"]["sent"] == 20000 and a["load"]["failed"] == 0
    assert "(h2load, 16 in flight)" in proc.stderr  # `make test` installs it; auto takes it
    roles = sorted(s["role"] for s in a["series"])
    assert roles == ["master", "worker", "worker"]
    top = a["growing_sites"][0]
    assert top["bytes_per_request"] == pytest.approx(100, rel=0.10)
    assert top["allocations_per_request"] == pytest.approx(1, rel=0.10)
    assert "malloc" in top["frames"][0] and any("zif_ffi_trampoline" in f for f in top["frames"][:6])
    assert top["php"] == "an FFI call ($ffi->func()) in code the script runs itself (no Swoole callback) of /app/app.php"
    # PHP without Swoole: said once, beside the verdict.
    assert [w for w in a["not_measured"] if "Swoole" in w] == \
        ["Swoole coroutines: not counted (Swoole is not loaded in the app)"], a["not_measured"]
    # The same leak, reported by LeakSanitizer at exit: the run's capture works under the soak.
    assert any(f["kind"] == "direct-leak" and f["category"] == "leak" for f in out["findings"])
    assert containers_of(docker_client, out["session"]) == []


def test_soak_session_keeps_samples_plot_and_replays(leaking, work):
    out, _ = leaking
    folder, env = work
    sdir = folder / ".asanlab" / "sessions" / out["session"]
    lines = (sdir / "soak" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3 * 8  # the start, then 8 per checkpoint interval
    assert (sdir / "soak" / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sdir / "soak" / "samples.csv").read_text().startswith("requests,time,pid,role,allocated")
    replay = asanlab("replay", out["session"], cwd=folder, env=env, check=1)
    assert "soak: LEAK" in replay.stdout and "growing allocation stacks" in replay.stdout
    assert "B/request" in replay.stdout and "max_request <=" in replay.stdout
    assert "in PHP: an FFI call ($ffi->func()) in code the script runs itself" in replay.stdout
    # The soak as its own baseline: the same LEAK (from its stored analysis) and the same findings
    # are not new; --fail-on any still fails.
    same = asanlab("replay", out["session"], "--baseline", out["session"], cwd=folder, env=env, check=0)
    assert "the baseline's soak leaked too" in same.stderr and "this LEAK is not new" in same.stderr
    asanlab("replay", out["session"], "--baseline", out["session"], "--fail-on", "any", cwd=folder, env=env, check=1)


def test_clean_server_is_stable(work):
    folder, env = work
    # --record: the load goes through asanlab's recording proxy, and the verdict does not change.
    proc = soak(folder, env, "clean", 0, "--client", "builtin", "--record", check=0)
    out = json.loads(proc.stdout)
    a = out["soak"]
    assert "(built-in client, 16 in flight)" in proc.stderr
    assert a["load"]["sent"] == 20000 and a["load"]["failed"] == 0
    assert a["verdict"] == "STABLE", a["series"]
    assert abs(a["bytes_per_request"]) < 1
    recorded = json.loads((folder / ".asanlab" / "sessions" / out["session"] / "session.json").read_text())["traffic"]
    # Every request the load sent, and the few the soak's readiness and flush sent besides.
    assert recorded["requests"] >= 20000 and recorded["unanswered"] == [] and recorded["cut_at"] is None, recorded


def test_an_image_without_the_agent_still_gets_a_verdict(work, docker_client):
    """`--image` of a PHP image without asanlab's agent (here the same image, its label taken away):
    no allocator bytes, stacks or PHP lines, said once; memory from /proc still gives the verdict."""
    folder, env = work
    with without_agent(docker_client, "e2e-php", "asanlab-test/no-agent:latest") as tag:
        (folder / "noagent").mkdir(exist_ok=True)
        shutil.copy(SERVER, folder / "noagent" / "app.php")
        port = free_port()
        proc = asanlab("soak", "noagent/app.php", "--image", tag, "-p", f"{port}:8080", "-e", "LEAK_BYTES=2000",
                       "-e", "WORKERS=2", "--url", f"http://127.0.0.1:{port}/orders",
                       "--checkpoints", "1000,5000,20000", "--format", "json", cwd=folder, env=env)
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        a = json.loads(proc.stdout)["soak"]
        assert a["metric"] != "allocated" and a["verdict"] == "LEAK", (a["metric"], a["verdict"], a["series"])
        assert a["not_measured"] == ["the image has no asanlab agent: memory from /proc only (no allocator bytes, "
                                     "allocation stacks, PHP lines, PHP variables or coroutine counts)"]
        assert proc.stdout.count("has no asanlab agent") == 1


def test_app_that_never_answers_is_an_infrastructure_error(work, docker_client):
    folder, env = work
    (folder / "mute").mkdir(exist_ok=True)
    (folder / "mute" / "app.php").write_text("<?php sleep(600);\n")
    port = free_port()
    proc = asanlab("soak", "mute/app.php", "--recipe", "php.yml", "-p", f"{port}:8080", "--grace", "2",
                   "--url", f"http://127.0.0.1:{port}/", "--ready-timeout", "3", cwd=folder, env=env, check=3)
    assert "did not answer" in proc.stderr
    assert not docker_client.containers.list(all=True, filters={"label": "org.asanlab.role"})


def test_bad_checkpoints_change_nothing(work):
    folder, env = work
    before = set((folder / ".asanlab" / "sessions").glob("*")) if (folder / ".asanlab" / "sessions").exists() else set()
    proc = asanlab("soak", "leaky/app.php", "--recipe", "php.yml", "--url", "http://127.0.0.1:1/",
                   "--checkpoints", "1000,500", cwd=folder, env=env, check=2)
    assert "--checkpoints" in proc.stderr
    after = set((folder / ".asanlab" / "sessions").glob("*")) if (folder / ".asanlab" / "sessions").exists() else set()
    assert after == before


HOSTILE_PLANTS = r"""<?php
// Before it serves (the prefork server below), the app plants links to a host canary and folder,
// FIFOs and a huge sparse file in the agent's folder (the agents' answers), under every name
// asanlab reads there, and in its other read-write folders; and tries the soak's trigger folder,
// which is read-only.
$canary = getenv('HOST_CANARY');
foreach (['/asanlab/agent', '/asanlab/php', '/asanlab/state', '/asanlab/logs', '/asanlab/control'] as $dir) {
    foreach (['trigger', 'trigger.tmp', 'answers.99999', 'php-heap.99999', 'php-census.99999',
              'sanitizer.99999', 'php-origin.99999'] as $name) {
        @symlink($canary, "$dir/$name");
    }
    @symlink(dirname($canary), "$dir/hostdir");
    @posix_mkfifo("$dir/answers.99998", 0644);
    @posix_mkfifo("$dir/php-heap.99998", 0644);
    $f = @fopen("$dir/php-census.99997", 'w');
    if ($f) {
        ftruncate($f, 100 * 1024 * 1024 * 1024);
        fclose($f);
    }
}
require __DIR__ . '/server.php';
"""


def test_a_hostile_app_under_soak_reaches_no_host_file_and_its_leak_is_still_measured(work, docker_client, tmp_path):
    """The soak reads the agents' answers from a folder the app can write, and writes its trigger
    into one the app cannot: with links, FIFOs and a sparse file planted in the first, no host file
    changes, nothing hangs, nothing lands in the second, and the leak is measured as usual (LEAK,
    about 100 B/request), through --record's proxy."""
    import hashlib

    folder, env = work
    host = tmp_path / "host"
    host.mkdir()
    canary = host / "canary.txt"
    canary.write_bytes(b"host secret: must never leave the host\n")
    before = hashlib.sha256(canary.read_bytes()).hexdigest()
    (folder / "hostile-soak").mkdir(exist_ok=True)
    shutil.copy(SERVER, folder / "hostile-soak" / "server.php")
    (folder / "hostile-soak" / "app.php").write_text(HOSTILE_PLANTS)
    port = free_port()
    proc = asanlab("soak", "hostile-soak/app.php", "--recipe", "php.yml", "-p", f"{port}:8080",
                   "-e", "LEAK_BYTES=100", "-e", "WORKERS=2", "-e", f"HOST_CANARY={canary}",
                   "--url", f"http://127.0.0.1:{port}/orders", "--checkpoints", "1000,3000,6000",
                   "--client", "builtin", "--record", "--full-stacks", "--format", "json",
                   cwd=folder, env=env, timeout=1200, check=1)
    out = json.loads(proc.stdout)
    a = out["soak"]
    assert a["verdict"] == "LEAK" and a["bytes_per_request"] == pytest.approx(100, rel=0.15), a["series"]
    assert a["load"]["failed"] == 0
    assert hashlib.sha256(canary.read_bytes()).hexdigest() == before and sorted(p.name for p in host.iterdir()) == \
        ["canary.txt"]
    sdir = folder / ".asanlab" / "sessions" / out["session"]
    assert (sdir / "agent" / "trigger").is_symlink()  # the app's link, left as it was: asanlab writes no trigger there
    assert sorted(p.name for p in (sdir / "control").iterdir()) == ["trigger"]  # read-only to the app
    assert (sdir / "control" / "trigger").read_bytes().split()[0] != b"0"  # samples were asked for
    assert json.loads((sdir / "session.json").read_text())["status"] == "finished"
    assert containers_of(docker_client, out["session"]) == []
