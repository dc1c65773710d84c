"""`run --record`: the recording proxy in front of the app's first published TCP port, and what
it recorded, summed up at the end."""

from __future__ import annotations

from .. import session as sessions
from ..errors import InfraError
from ..events import Event, Reporter


def recorded_port(ports: dict, reporter: Reporter) -> tuple[str, tuple[str, int]] | None:
    """The published port whose traffic is recorded: the first TCP one, as (container port, where
    the user asked for it)."""
    tcp = [k for k in ports if k.endswith("/tcp")]
    if not tcp:
        reporter(Event("run.warning", "--record: no TCP port is published (-p): nothing to record"))
        return None
    if len(tcp) > 1:
        reporter(Event("run.warning", f"--record: only {tcp[0]} is recorded; {', '.join(tcp[1:])} pass unrecorded"))
    return tcp[0], ports[tcp[0]]


def start_recorder(container, recorded: tuple[str, tuple[str, int]], s: sessions.Session, reporter: Reporter):
    from .proxy import Recorder
    from .traffic import FILE

    cport, (ip, port) = recorded
    container.reload()
    published = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(cport) or []
    if not published:
        raise InfraError(f"--record: Docker did not publish {cport}")
    recorder = Recorder((ip, port), ("127.0.0.1", int(published[0]["HostPort"])), s.path / "traffic" / FILE)
    recorder.start()
    ip, port = recorder.listen
    s.data["traffic"] = {"port": cport, "listen": f"{ip}:{port}", "file": f"traffic/{FILE}"}
    s.save()
    reporter(Event("run.recording", f"recording what clients send to {ip}:{port} (-> {cport}) in {s.path / 'traffic'}",
                   {"port": cport, "listen": f"{ip}:{port}"}))
    return recorder


def traffic_summary(recorder, s: sessions.Session, reporter: Reporter) -> dict:
    """What was recorded, and the requests the app never answered: the one a worker died on is
    among them."""
    from . import traffic

    # One connection at a time: a recording at its 1 GiB limit is never in memory whole.
    requests: list[tuple[float, int, int, str, bool]] = []  # what the summary needs of each request
    messages = 0
    for conn in traffic.each_connection(recorder.out):
        requests += [(r.time, r.connection, r.index, r.line, r.status is None) for r in conn.requests]
        messages += len(conn.messages)
    requests.sort()
    cut = recorder.cut_at
    # Past the limit no answer was kept: a request without one may have been answered after the cut.
    unanswered = [f"{line} (connection {c})" for _, c, _, line, no_answer in requests if no_answer] \
        if cut is None else []
    reporter(Event("run.recorded", f"recorded {len(requests)} request(s) on {recorder.connections} connection(s)"
                   + (f" and {messages} WebSocket message(s)" if messages else "")
                   + (f"; never answered: {', '.join(unanswered[:5])}" if unanswered else ""),
                   {"requests": len(requests), "unanswered": len(unanswered), "websocket_messages": messages}))
    if recorder.drop_reason:
        reporter(Event("run.warning", f"asanlab's recording proxy itself ran short ({recorder.drop_reason}): "
                                      f"{recorder.dropped} connection(s) were dropped by asanlab, not by the app, and "
                                      "new ones waited; raise the open-files limit (ulimit -n) for that many clients "
                                      "at once"))
    if cut is not None:
        reporter(Event("run.warning", f"the recording stopped keeping bytes at {recorder.limit >> 20} MiB, "
                                      f"{cut:.0f} s in: requests after that were forwarded, not recorded, and which "
                                      "request went unanswered cannot be told"))
    return {"connections": recorder.connections, "bytes_in": recorder.bytes_in, "requests": len(requests),
            "websocket_messages": messages,
            "unanswered": unanswered[:100], "cut_at": cut, "limit": recorder.limit, "dropped": recorder.dropped}
