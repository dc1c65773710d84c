"""A bug-report bundle: what Swoole's and PHP's maintainers ask for, in one tar.gz.

The findings (text, full reports, JSON), the raw logs, the recipe, the command and environment,
and from the session's image: `php -v`, `php -m`, `php --ri` of each extension, `uname -a`, the
image's ID and labels.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import time
from pathlib import Path

import yaml

from . import containers
from .docker_client import docker_errors
from .layout import IMAGE_EXTENSIONS
from .session import ID, Session
from . import untrusted
from .printable import printable

RAW_LIMIT = 2 << 30  # bytes of raw logs a bundle takes (the recording proxy keeps at most 1 GiB)
PROBE = ("echo '$ php -v'; php -v 2>&1; echo; echo '$ php -m'; php -m 2>&1; "
         "for e in $ASANLAB_EXTENSIONS; do echo; echo \"$ php --ri $e\"; php --ri \"$e\" 2>&1; done; "
         "echo; echo '$ uname -a'; uname -a")


def _image_facts(client, session: Session) -> str:
    image_id = (session.data.get("image") or {}).get("id")
    if not image_id or client is None:
        return "the session's image is not recorded, or Docker is unavailable: no php -v / php --ri here\n"
    from docker.errors import ImageNotFound

    with docker_errors("could not run the session's image for the bundle"):
        try:
            image = client.images.get(image_id)
        except ImageNotFound:
            return (f"image {image_id} is no longer on this machine: rebuild it from the recipe to add "
                    "php -v / php --ri\n")
        extensions = (image.labels or {}).get(IMAGE_EXTENSIONS, "")
        names = " ".join(e.rsplit("-", 1)[0] for e in extensions.split(",") if e)
        probe = containers.call(client, image_id, ["sh", "-c", PROBE], role="bundle", timeout=120,
                                environment={"ASANLAB_EXTENSIONS": names, "ASAN_OPTIONS": "detect_leaks=0"}).output
    labels = json.dumps(image.labels or {}, indent=2, sort_keys=True)
    return f"image {image.id}\ntags {', '.join(image.tags)}\nlabels {labels}\n\n{probe}"


def _left_out_note(left_out: list[tuple[str, str]]):
    """left-out.txt, once the folders before it were read: what raw/ held that is not in the archive."""
    if left_out:
        yield "left-out.txt", "".join(f"raw/{printable(n)}: {why}\n" for n, why in left_out).encode()


def write(session: Session, out: Path, report_text: str, findings_json: str, client=None) -> list[str]:
    """Write the bundle; returns the names it holds."""
    files: dict[str, bytes] = {
        "README.txt": (f"asanlab bug-report bundle for session {session.id}\n"
                       "report.txt      the findings, with each full sanitizer report\n"
                       "findings.json   the same, as JSON\n"
                       "environment.txt php -v, php -m, php --ri of each extension, uname -a, the image\n"
                       "command.txt     how the app was run (image, command, environment, ports)\n"
                       "recipe.yml      the recipe the image was built from\n"
                       "session.json    everything asanlab recorded\n"
                       "raw/            every sanitizer log and the app's output, verbatim (regular files\n"
                       "                only: left-out.txt names what else the app had put there)\n"
                       "reproducer/     when the traffic was minimized: the requests that bring the finding back;\n"
                       "                `asanlab reproduce reproducer/` runs them\n").encode(),
        "report.txt": report_text.encode(),
        "findings.json": findings_json.encode(),
        "environment.txt": _image_facts(client, session).encode(),
        "session.json": untrusted.read_bytes(session.path / "session.json", under=session.path),
    }
    d = session.data
    files["command.txt"] = json.dumps({k: d.get(k) for k in ("image", "command", "environment", "ports", "app")},
                                      indent=2).encode()
    if d.get("recipe"):
        files["recipe.yml"] = yaml.safe_dump(d["recipe"], sort_keys=False).encode()
    # raw/ holds what the app's container wrote: only its regular files go in, no link is
    # followed (a link there would put a host file into an archive meant for a public issue).
    # Read one file at a time, as they are written into the archive.
    left_out: list[tuple[str, str]] = []
    members = itertools.chain(
        files.items(),
        ((f"raw/{n}", d) for n, d in untrusted.tree(session.path / "raw", limit=RAW_LIMIT, left_out=left_out)),
        ((f"reproducer/{n}", d) for n, d in untrusted.tree(session.path / "reproducer", limit=RAW_LIMIT)),
        _left_out_note(left_out))
    # The id names every member: one plain name, whatever a received session.json says.
    prefix = f"asanlab-{session.id}" if ID.fullmatch(session.id) else "asanlab-session"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    names = []
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name, data in members:
                info = tarfile.TarInfo(f"{prefix}/{name}")
                info.size = len(data)
                info.mtime = int(time.time())
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
                names.append(name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return names
