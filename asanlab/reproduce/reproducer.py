"""A reproducer bundle: the folder `reproduce --minimize` writes, which `asanlab reproduce FOLDER`
runs on any machine with asanlab and the image (or its recipe).

    bundle.json      what to run: the app, arguments, environment, port, image, recipe, the finding
                     and its rate
    recording.jsonl  the kept requests, byte for byte (the session's traffic format)
    requests.jsonl   the same requests in soak's --requests-file format
    recipe.yml       the recipe the image was built from
    finding.json     the finding as the recorded run reported it
    app/             a copy of the app's folder (when under APP_COPY_LIMIT)
    README.txt       how to run it and verify a fix
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from .. import untrusted
from ..run import traffic
from .minimize import Shrunk
from .source import BUNDLE_FILE, BUNDLE_FORMAT, Expected, Source

APP_COPY_LIMIT = 20 * 1024 * 1024  # bytes: above, the bundle names the app's path instead
SKIPPED = {".asanlab", ".git"}  # asanlab's own sessions live beside many apps
# Set by the client or the connection, not by the request's meaning: soak's loader sets its own.
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def write(src: Source, shrunk: Shrunk, expected: Expected, finding: dict | None = None,
          concurrent: bool = False) -> Path:
    """Write the bundle into the source's reproducer/ folder (replacing an older one); its path."""
    out = src.output_dir
    tmp = out.with_name(f".{out.name}.tmp")
    # In a bundle someone sent, either name may be a link: replaced, never written through.
    untrusted.remove(tmp)
    tmp.mkdir(parents=True)
    keep = {(r.connection, r.index) for r in shrunk.requests}
    traffic.write(tmp / "recording.jsonl", src.conns, keep)
    # soak's format holds HTTP requests: a WebSocket's messages are in recording.jsonl only.
    (tmp / "requests.jsonl").write_text("".join(json.dumps(requests_line(r)) + "\n" for r in shrunk.requests
                                                if isinstance(r, traffic.HttpRequest)))
    copied = _copy_app(src.app.parent, tmp / "app")
    meta = {
        "format": BUNDLE_FORMAT, "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from": src.id,
        "app": {"name": src.app.name, "path": str(src.app), "copied": copied},
        "args": src.args, "env": src.env, "port": src.port,
        "image": {"id": src.image_id, "refs": src.image_refs}, "recipe": src.recipe, "stacks": src.stacks,
        "replay": "concurrent" if concurrent else "sequential", "valgrind": src.valgrind,
        "recording": "recording.jsonl",
        "findings": [vars(expected)],
        "rate": {"hits": shrunk.hits, "original_hits": shrunk.original_hits, "tries": shrunk.tries},
        "requests": [{"connection": r.connection, "index": r.index, "request": r.line} for r in shrunk.requests],
        "recorded_requests": len(traffic.all_units(src.conns)),
    }
    (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if src.recipe:
        (tmp / "recipe.yml").write_text(yaml.safe_dump(src.recipe, sort_keys=False))
    if finding is not None:
        (tmp / "finding.json").write_text(json.dumps(finding, indent=2) + "\n")
    (tmp / "README.txt").write_text(_readme(src, shrunk, expected, copied))
    untrusted.remove(out)
    tmp.replace(out)
    return out


def requests_line(r: traffic.HttpRequest) -> dict:
    """A request as soak's --requests-file reads it (the URL relative to --url)."""
    line: dict = {"method": r.method, "url": r.target}
    headers = {k: v for k, v in r.headers if k not in HOP_HEADERS}
    if headers:
        line["headers"] = headers
    if r.body:
        line["body"] = r.body.decode("utf-8", errors="replace")  # the file format holds text bodies only
    return line


def _copy_app(folder: Path, dest: Path) -> bool:
    """The app's regular files, links not followed: a bundle is handed to others, and a link in the
    app's folder would put the file it names (anywhere on this machine) into it."""
    files = [p for p in untrusted.walk(folder) if not SKIPPED & set(p.relative_to(folder).parts)]
    if sum(p.lstat().st_size for p in files) > APP_COPY_LIMIT:
        return False
    for p in files:
        target = dest / p.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(untrusted.read_bytes(p, under=folder, limit=APP_COPY_LIMIT))
    return True


def _readme(src: Source, shrunk: Shrunk, expected: Expected, copied: bool) -> str:
    rate = f"{shrunk.hits} of {shrunk.tries}" if shrunk.tries > 1 else "every replay"
    app = "app/ holds a copy of the app's folder" if copied else f"the app is {src.app} (too large to copy)"
    image = src.image_refs[0] if src.image_refs else (src.image_id or "the recorded image")
    return (f"asanlab reproducer: {len(shrunk.requests)} request(s), kept from {len(traffic.all_units(src.conns))} "
            f"recorded in {src.id}, that bring back\n  {expected.category} {expected.kind}  {expected.signature}\n"
            f"({rate}; the whole recording: {shrunk.original_hits} of {shrunk.tries}).\n\n"
            f"Run it:             asanlab reproduce THIS_FOLDER --runs 10\n"
            f"Verify a fix:       asanlab reproduce THIS_FOLDER --image NEW_IMAGE   (or --recipe NEW_RECIPE.yml)\n"
            f"Image:              {image}; build recipe.yml with `asanlab build recipe.yml` if it is not here\n"
            f"App:                {app}\n"
            f"Requests:           recording.jsonl (byte for byte), requests.jsonl (for `asanlab soak --requests-file`)\n")
