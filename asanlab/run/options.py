"""What a run is given (RunOptions, a Companion beside the app) and what it returns, and the -p and
-e parsers. No Docker."""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import session as sessions
from ..errors import UsageError
from ..events import Reporter
from ..reports.findings import Finding


@dataclass
class RunOptions:
    app: Path
    image: str
    args: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: float | None = None
    grace: float = 15.0
    recipe: object | None = None  # the Recipe, when the run came from one
    image_id: str | None = None
    # asanlab's agent in the image (its org.asanlab.agent label), preloaded into PHP: it writes the
    # PHP backtrace of every ASan error (images/agent). None: an image without it, reports stay C only.
    agent: str | None = None
    # In an image without the agent: asanlab's crash handler (image/crash_handler.Handler), mounted and
    # preloaded so that a crash leaves its C stack and PHP line. None: such a crash leaves no stack.
    crash_handler: object | None = None
    suppressions: list[str] = field(default_factory=list)  # leak:PATTERN rules from --suppressions
    # Keep what clients sent the app (asanlab/run/proxy.py) on its first published TCP port, in the
    # session's traffic/ folder, for `asanlab reproduce`.
    record: bool = False
    # Every PHP process under Valgrind's memcheck (an image with tools: [valgrind]; run/valgrind.py).
    valgrind: bool = False
    # ASan's slow unwinder on every allocation: complete stacks through code without frame pointers
    # (libffi, system libraries) at 3-4x the cost. Off, allocation stacks are unwound with frame
    # pointers (environment.FAST_STACKS). True by default: without asanlab's agent naming each
    # leak's PHP code and start-up, a stack cut short would say nothing.
    full_stacks: bool = True
    companion: "Companion | None" = None  # a command working beside the app (soak), else a plain run


@dataclass(frozen=True)
class Companion:
    """What a command that works beside the app (`asanlab soak`) adds to a run. `run` knows it only
    through these fields."""

    kind: str  # the session's kind: "soak"
    driver: Callable[["DriverContext"], None]  # runs while the app runs; its return ends the run
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # session subfolder -> container path, read-write
    # Files asanlab writes before the app starts and may rewrite while it runs (the soak's trigger):
    # name -> first content, in the session's control folder, mounted read-only at CONTROL_DIR.
    controls: dict[str, bytes] = field(default_factory=dict)
    asan_options: dict = field(default_factory=dict)  # its own ASAN_OPTIONS defaults
    info: dict = field(default_factory=dict)  # more for session.json
    # With the agent: record which PHP code allocated each block, so that each LeakSanitizer leak
    # names its PHP line (images/agent/php-origin.c). A cost on every allocation.
    php_origins: bool = True


@dataclass
class DriverContext:
    container: object
    session: sessions.Session
    stop: threading.Event  # set when the user interrupts: stop soon
    reporter: Reporter


@dataclass
class RunResult:
    session: sessions.Session
    findings: list[Finding]
    exit_code: int | None
    stop_reason: str


def parse_ports(specs: list[str]) -> dict[str, tuple[str, int]]:
    """-p [IP:]HOST:CONTAINER[/PROTO]. Without an IP, bind to 127.0.0.1: an ASan debug build is no
    service to expose to the network by surprise."""
    out: dict[str, tuple[str, int]] = {}
    for spec in specs:
        m = re.fullmatch(r"(?:(?P<ip>[0-9.]+|\[[0-9a-f:]+\]):)?(?P<host>\d+):(?P<cont>\d+)(?:/(?P<proto>tcp|udp))?", spec)
        if not m:
            raise UsageError(f"-p {spec}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. -p 9501:9501")
        ip = m.group("ip") or "127.0.0.1"
        try:
            # Docker binds every address when it cannot use the one given: a typo must stop here.
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise UsageError(f"-p {spec}: {ip} is not an IP address") from None
        host, cont = int(m.group("host")), int(m.group("cont"))
        for port in (host, cont):
            if not 0 < port < 65536:
                raise UsageError(f"-p {spec}: port {port} is out of range (1-65535)")
        out[f"{cont}/{m.group('proto') or 'tcp'}"] = (ip.strip("[]"), host)
    return out


def parse_env(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"-e {spec}: expected KEY=VALUE")
        out[key] = value
    return out


def check_arguments(app: Path, ports: list[str], env: list[str]) -> None:
    """The command line's own mistakes, named before anything is downloaded, built or started
    (and whether Docker is up or not)."""
    if not app.exists():
        raise UsageError(f"{app}: no such PHP file")
    if not app.is_file():
        raise UsageError(f"{app}: not a regular file; give the app's PHP entry point")
    parse_ports(ports)
    parse_env(env)
