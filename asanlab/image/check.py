"""Prove a built image is instrumented: ASan checks in every binary, extensions load, canaries caught;
and that the debugging tools a recipe asked for are there and work (gdb's helpers, Valgrind's leak)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import containers
from ..docker_client import docker_errors
from ..events import Event, Reporter, null_reporter
from .recipe import Recipe


@dataclass
class CheckResult:
    binaries: dict[str, int] = field(default_factory=dict)  # path -> number of __asan_report call sites
    extensions: dict[str, bool] = field(default_factory=dict)
    leak_caught: bool = False
    overflow_caught: bool = False
    tools: dict[str, bool] = field(default_factory=dict)  # gdb, valgrind -> installed
    gdbinit: set[str] = field(default_factory=set)  # php, swoole: gdb helper files in the image
    valgrind_leak_caught: bool = False
    failures: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


def parse_output(text: str, recipe: Recipe) -> CheckResult:
    """Read check-instrumented.sh's "key value" lines. Pure, so the rules are unit-tested."""
    r = CheckResult(output=text)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "binary":
            r.binaries[parts[1]] = int(parts[2]) if parts[2].isdigit() else 0
        elif len(parts) >= 3 and parts[0] == "ri":
            r.extensions[parts[1]] = parts[2] == "ok"
        elif line.startswith("leak-report "):
            r.leak_caught = True
        elif line.startswith("overflow-report "):
            r.overflow_caught = True
        elif len(parts) >= 3 and parts[0] == "tool":
            r.tools[parts[1]] = parts[2] == "ok"
        elif len(parts) >= 3 and parts[0] == "gdbinit" and parts[2] == "ok":
            r.gdbinit.add(parts[1])
        elif line.startswith("valgrind-leak-report "):
            r.valgrind_leak_caught = True
    if recipe.sanitizers.address:
        if not r.binaries:
            r.failures.append("no binaries were examined")
        r.failures += [f"{path} has no AddressSanitizer checks" for path, n in r.binaries.items() if n == 0]
        so_names = {p.rsplit("/", 1)[-1] for p in r.binaries}
        r.failures += [f"{e.so_name}.so was not installed" for e in recipe.all_extensions
                       if f"{e.so_name}.so" not in so_names]
        if not r.overflow_caught:
            r.failures.append("a heap-buffer-overflow canary ran unreported")
        if recipe.sanitizers.leak and not r.leak_caught:
            r.failures.append("a 4243-byte leak canary ran unreported")
    for tool in recipe.tools:
        if not r.tools.get(tool):
            r.failures.append(f"{tool} is not installed")
    if "gdb" in recipe.tools:
        wanted = ["php"] + (["swoole"] if recipe.swoole else [])
        r.failures += [f"gdb's {name}.gdbinit is missing" for name in wanted if name not in r.gdbinit]
    if "valgrind" in recipe.tools and not r.valgrind_leak_caught:
        r.failures.append("Valgrind did not report a 4243-byte leak canary")
    ri_output = " ".join(line[len("ri-output "):] for line in text.splitlines() if line.startswith("ri-output "))
    r.failures += [f"`php --ri {name}` failed" + (f": {ri_output[:600]}" if ri_output else "")
                   for name, ok in r.extensions.items() if not ok]
    return r


def run_checks(client, image: str, recipe: Recipe, *, reporter: Reporter = null_reporter) -> CheckResult:
    names = [e.so_name for e in recipe.all_extensions]
    # A check that cannot run is an infrastructure failure, not an uninstrumented image.
    with docker_errors(f"the instrumentation check could not run in {image[:19]}"):
        text = containers.call(client, image, ["sh", "/opt/asanlab/scripts/check-instrumented.sh", *names],
                               role="check", timeout=300,
                               environment={"ASANLAB_TOOLS": " ".join(recipe.tools)}).output
    result = parse_output(text, recipe)
    for path, n in result.binaries.items():
        reporter(Event("check.binary", f"{path}: {n} references to __asan_report_*", {"path": path, "sites": n}))
    for tool in recipe.tools:
        reporter(Event("check.tool", f"{tool}: " + ("installed" if result.tools.get(tool) else "MISSING"),
                       {"tool": tool, "ok": bool(result.tools.get(tool))}))
    reporter(Event("check.done", "instrumentation check passed" if result.ok else
                   "instrumentation check FAILED: " + "; ".join(result.failures),
                   {"ok": result.ok, "failures": result.failures}))
    return result
