"""The agent's soak channel when the app is out of descriptors, on the host (no Docker): the agent
(images/agent, built without PHP) preloaded into a program that takes every descriptor the moment
one is free, as a server leaking one per request does, and a child it forks. Every sample asanlab
asks for is answered by both, with the trigger written as the soak writes it. Missing clang skips
this on a developer's machine and fails it under CI=true (`make test` installs it)."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from asanlab.soak import driver, memory

REPO = Path(__file__).resolve().parents[2]
CC = "clang-14"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if shutil.which(CC) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {CC} is not installed (make test installs it)")
        pytest.skip(f"{CC} not installed (Debian: clang-14)")
    out = tmp_path_factory.mktemp("agent-fd")
    agent = REPO / "images" / "agent"
    subprocess.run([CC, "-O1", "-g", "-fPIC", "-shared", "-pthread", "-o", str(out / "agent.so"),
                    *map(str, sorted(agent.glob("*.c"))), "-lm"], check=True)
    # php-*: the agent starts only in PHP (it checks the program's name).
    subprocess.run([CC, "-O1", "-g", "-o", str(out / "php-fd-hog"), str(REPO / "tests" / "agent" / "fd-hog.c")],
                   check=True)
    subprocess.run([CC, "-O1", "-g", "-o", str(out / "php-exiting"), str(REPO / "tests" / "agent" / "exiting.c")],
                   check=True)
    return out


def answered(folder: Path, pid: int, seq: int) -> bool:
    path = folder / f"answers.{pid}"
    return path.is_file() and any(a.seq == seq for a in memory.parse_answers(path.read_text()))


def start_hog(built: Path, tmp_path: Path):
    """The hog with the agent preloaded, its trigger written as the soak writes it before the app
    starts: (process, the agent's folder, the trigger)."""
    agent, control = tmp_path / "agent", tmp_path / "control"
    agent.mkdir()
    control.mkdir()
    trigger = control / driver.TRIGGER
    trigger.write_bytes(driver.trigger_record(0, False, 500, []))
    proc = subprocess.Popen([str(built / "php-fd-hog")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "LD_PRELOAD": str(built / "agent.so"),
                                 "ASANLAB_AGENT_DIR": str(agent), "ASANLAB_AGENT_TRIGGER": str(trigger)})
    return proc, agent, trigger


def test_an_app_out_of_descriptors_and_its_child_answer_every_sample(built, tmp_path):
    proc, agent, trigger = start_hog(built, tmp_path)
    try:
        ready = proc.stdout.readline().split()
        assert ready[:1] == ["ready"], ready
        pids = [int(ready[1]), int(ready[2])]
        for seq in range(1, 11):
            driver.write_trigger(trigger, driver.trigger_record(seq, False, 500, []))
            deadline = time.monotonic() + 30
            while not all(answered(agent, pid, seq) for pid in pids):
                assert time.monotonic() < deadline, (seq, {p: (agent / f"answers.{p}").read_text()
                                                           if (agent / f"answers.{p}").exists() else None
                                                           for p in pids})
                time.sleep(0.02)
        # Both really were out of descriptors all along: every slot is taken.
        for pid in pids:
            assert len(os.listdir(f"/proc/{pid}/fd")) == 64
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_record_read_half_written_is_no_request(built, tmp_path):
    """The agent takes a record only when its sequence number starts and ends the line: one whose
    end is another's (a read that met the host's write half done) is not answered."""
    proc, agent, trigger = start_hog(built, tmp_path)
    try:
        pid = int(proc.stdout.readline().split()[1])
        torn = driver.trigger_record(2, False, 500, [])[:6] + driver.trigger_record(1, False, 500, [])[6:]
        assert torn.startswith(b"2 0 500 - 1\n")
        driver.write_trigger(trigger, torn)
        time.sleep(1)  # the agent reads every 50 ms
        assert not answered(agent, pid, 2) and not answered(agent, pid, 1)
        driver.write_trigger(trigger, driver.trigger_record(2, False, 500, []))
        deadline = time.monotonic() + 30
        while not answered(agent, pid, 2):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_process_that_exits_answers_no_more(built, tmp_path):
    """LeakSanitizer's exit check runs after the agent's atexit handler: from there on the agent
    answers nothing (a profile printed into the check's report hung a Swoole worker leaving at
    max_request). Before the exit it answers; in the exit's last step it does not."""
    agent, control = tmp_path / "agent", tmp_path / "control"
    agent.mkdir()
    control.mkdir()
    trigger = control / driver.TRIGGER
    trigger.write_bytes(driver.trigger_record(0, False, 500, []))
    proc = subprocess.Popen([str(built / "php-exiting")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "LD_PRELOAD": str(built / "agent.so"),
                                 "ASANLAB_AGENT_DIR": str(agent), "ASANLAB_AGENT_TRIGGER": str(trigger)})
    try:
        pid = int(proc.stdout.readline().split()[1])
        driver.write_trigger(trigger, driver.trigger_record(1, False, 500, []))
        deadline = time.monotonic() + 30
        while not answered(agent, pid, 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answered(agent, pid, 1)
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "exiting\n"
        driver.write_trigger(trigger, driver.trigger_record(2, False, 500, []))
        time.sleep(1.0)  # twenty of the agent's polls
        assert not answered(agent, pid, 2)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
