"""images/scripts/swoole-asan-fibers.sh on sources shaped like Swoole's src/coroutine/context.cc.
The real Swoole releases go through it in the Docker tests (test_swoole.py, test_swoole_versions.py)."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "scripts" / "swoole-asan-fibers.sh"

# The shape all supported releases share (5.1.8, 6.1.9, 6.2.2): the include, then the three functions.
CONTEXT = """#include "swoole_coroutine_context.h"

namespace swoole {
bool Context::swap_in() {
    return 0 == swapcontext(&swap_ctx_, &ctx_);
}

bool Context::swap_out() {
    return 0 == swapcontext(&ctx_, &swap_ctx_);
}

void Context::context_func(coroutine_transfer_t arg) {
    _this->fn_(_this->private_data_);
}
}
"""


def patch(tmp_path: Path, text: str) -> tuple[subprocess.CompletedProcess, str]:
    source = tmp_path / "src" / "coroutine" / "context.cc"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text)
    proc = subprocess.run(["sh", str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    return proc, source.read_text()


def test_each_switch_gets_its_hook(tmp_path):
    proc, out = patch(tmp_path, CONTEXT)
    assert proc.returncode == 0 and "reported to AddressSanitizer" in proc.stdout, proc.stderr
    lines = out.splitlines()
    for function, hook in (("bool Context::swap_in() {", "ASANLAB_FIBER_SWAP_IN();"),
                           ("bool Context::swap_out() {", "ASANLAB_FIBER_SWAP_OUT();"),
                           ("void Context::context_func(coroutine_transfer_t arg) {", "ASANLAB_FIBER_ARRIVED();")):
        assert lines[lines.index(function) + 1].strip() == hook
    assert out.count("__sanitizer_start_switch_fiber") == 2 and out.count("__sanitizer_finish_switch_fiber") == 2
    # The helpers come right after Swoole's own include, which they rely on.
    assert out.index("swoole_coroutine_context.h") < out.index("namespace asanlab_fiber")


def test_a_source_without_the_functions_is_left_alone(tmp_path):
    text = "// some other coroutine implementation\nint x;\n"
    proc, out = patch(tmp_path, text)
    assert proc.returncode == 0 and "NOTE" in proc.stdout and out == text


@pytest.mark.parametrize("missing", ["bool Context::swap_out() {", "void Context::context_func(coroutine_transfer_t arg) {"])
def test_a_partial_fit_fails_and_changes_nothing(tmp_path, missing):
    text = CONTEXT.replace(missing, missing.replace("Context::", "Context_"))
    proc, out = patch(tmp_path, text)
    assert proc.returncode == 1 and "only some coroutine switch hooks fit" in proc.stderr
    assert out == text
