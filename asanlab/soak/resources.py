"""Open file descriptors, named: what each of a process's fds points to, by kind (file, socket,
pipe, eventfd, ...) and by a pattern that one leak's descriptors share (a path with its numbers
wildcarded, a socket's listening port or peer). Pure: the sampler's text in, counts out.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass

# Patterns kept per process and sample: the largest ones (a leak is large by the end).
MAX_SITES = 40

_SOCKET = re.compile(r"^socket:\[(\d+)\]$")
_PIPE = re.compile(r"^pipe:\[\d+\]$")
_ANON = re.compile(r"^anon_inode:\[?([^\]]+)\]?$")
_ANON_KINDS = {"eventpoll": "epoll", "eventfd": "eventfd", "timerfd": "timerfd", "signalfd": "signalfd",
               "inotify": "inotify", "io_uring": "io_uring", "pidfd": "pidfd"}
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


@dataclass(frozen=True)
class Socket:
    proto: str  # tcp, udp, unix
    local: str = ""  # ip:port, or a unix path
    remote: str = ""
    listening: bool = False

    @property
    def local_port(self) -> str:
        return self.local.rsplit(":", 1)[-1] if ":" in self.local else ""


def _address(hexaddr: str) -> str:
    """/proc/net's "0100007F:1F90" -> "127.0.0.1:8080" (IPv4 and IPv6, stored as host-order words)."""
    ip_hex, _, port_hex = hexaddr.partition(":")
    try:
        raw = bytes.fromhex(ip_hex)
        port = int(port_hex, 16)
    except ValueError:
        return hexaddr
    if len(raw) not in (4, 16):
        return hexaddr
    # Each 32-bit word is little-endian.
    ordered = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(ordered)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def parse_net(tables: dict[str, str]) -> dict[str, Socket]:
    """/proc/net/{tcp,tcp6,udp,udp6,unix} text by table name -> sockets by inode."""
    out: dict[str, Socket] = {}
    for name, text in tables.items():
        proto = name.rstrip("6")
        for line in text.splitlines()[1:]:
            cols = line.split()
            if proto == "unix":
                # Num RefCount Protocol Flags Type St Inode [Path]
                if len(cols) >= 7 and cols[6].isdigit():
                    out[cols[6]] = Socket("unix", local=cols[7] if len(cols) > 7 else "")
            elif len(cols) >= 10 and cols[9].isdigit():
                # sl local rem st ... uid timeout inode
                out[cols[9]] = Socket(proto, _address(cols[1]), _address(cols[2]),
                                      listening=proto == "tcp" and cols[3] == _LISTEN)
    return out


def _wildcard(path: str) -> str:
    """Numbers in the last part of a path vary per request (ids, times, counters); the rest is
    where the file lives."""
    head, _, tail = path.rpartition("/")
    return f"{head}/{re.sub(r'[0-9]+', '*', tail)}"


def classify(target: str, sockets: dict[str, Socket], listening_ports: set[str]) -> tuple[str, str]:
    """(kind, pattern) of one descriptor's target as /proc/PID/fd shows it."""
    m = _SOCKET.match(target)
    if m:
        s = sockets.get(m.group(1))
        if s is None:
            return "socket", "socket (not TCP, UDP or Unix)"
        if s.proto == "unix":
            return "unix socket", f"unix {s.local}" if s.local else "unix socket (unnamed)"
        if s.proto == "udp":
            # A connected UDP socket (a client's) has a random local port: its peer names it.
            connected = s.remote and not s.remote.endswith(":0")
            return "udp socket", f"udp to {s.remote}" if connected else f"udp :{s.local_port}"
        if s.listening:
            return "tcp socket", f"tcp listening on :{s.local_port}"
        if s.local_port in listening_ports:
            return "tcp socket", f"tcp connection to :{s.local_port} (from a client)"
        return "tcp socket", f"tcp connection to {s.remote}"
    if _PIPE.match(target):
        return "pipe", "pipe"
    m = _ANON.match(target)
    if m:
        kind = _ANON_KINDS.get(m.group(1), m.group(1))
        return kind, kind
    if target.startswith("/dev/"):
        return "device", target
    if target.startswith("/"):
        deleted = target.endswith(" (deleted)")
        path = target[:-len(" (deleted)")] if deleted else target
        return "file", _wildcard(path) + (" (deleted)" if deleted else "")
    return "other", target


@dataclass
class Descriptors:
    """One process's open descriptors at one sample."""
    total: int
    kinds: dict[str, int]
    sites: dict[str, int]  # pattern -> count, the MAX_SITES largest

    def as_dict(self) -> dict:
        return {"fds": self.total, "fd_kinds": self.kinds, "fd_sites": self.sites}


def summarise(targets: list[str], sockets: dict[str, Socket]) -> Descriptors:
    listening = {s.local_port for s in sockets.values() if s.listening}
    kinds: Counter = Counter()
    sites: Counter = Counter()
    for t in targets:
        kind, pattern = classify(t, sockets, listening)
        kinds[kind] += 1
        sites[pattern] += 1
    return Descriptors(len(targets), dict(kinds.most_common()), dict(sites.most_common(MAX_SITES)))
