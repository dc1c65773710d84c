"""asanlab's crash handler for images it did not build: which image gets it, and how a run mounts
and preloads it. The build and the crash itself run for real in tests/docker/test_tools.py."""

import json

import pytest
from docker.errors import APIError

from asanlab import run, session
from asanlab.image import crash_handler
from asanlab.image.crash_handler import Handler, parse_glibc
from asanlab.run.lifecycle import _environment, _volumes


def test_glibc_versions_are_read_from_the_library_and_from_an_images_loader():
    assert parse_glibc("GLIBC_2.34\n") == (2, 34)
    assert parse_glibc("ld.so (Debian GLIBC 2.36-9+deb12u13) stable release version 2.36.\nCopyright") == (2, 36)
    assert parse_glibc("GNU C Library (Debian GLIBC 2.31-13+deb11u11) stable release version 2.31.\n") == (2, 31)
    assert parse_glibc("sh: /lib64/ld-linux-x86-64.so.2: not found") is None


def test_the_helper_image_is_content_addressed_by_its_base_and_the_agents_sources():
    a = crash_handler.rendered("debian:bookworm", "sha256:aaa")
    assert a.digest == crash_handler.rendered("debian:bookworm", "sha256:aaa").digest
    assert a.digest != crash_handler.rendered("debian:bookworm", "sha256:bbb").digest  # a new base: rebuilt
    assert "FROM debian:bookworm" in a.dockerfile and "-DASANLAB_WITH_PHP" not in a.dockerfile
    assert "agent/crash.c" in a.files and "agent/asanlab-agent.c" in a.files
    assert a.image_ref == f"asanlab/crash-handler:sha-{a.digest[:20]}"


class FakeImage:
    def __init__(self, image_id="sha256:1", arch="amd64"):
        self.id, self.attrs, self.labels = image_id, {"Architecture": arch}, {}


class FakeClient:
    """Only what for_image touches before the build: the image, and its loader's containers.
    `answers`: the loader's argument -> (exit code, output); None: there is no such loader."""

    def __init__(self, answers=None):
        self.answers, self.commands = answers, []
        self.images = self
        self.containers = self

    def get(self, ref):
        return FakeImage()

    def create(self, image, **kwargs):
        self.commands.append(kwargs)
        if self.answers is None:
            raise APIError("exec: no such file or directory")
        return FakeContainer(*self.answers[kwargs["command"][0]])


class FakeContainer:
    def __init__(self, code, output):
        self.code, self.output = code, output

    def start(self):
        pass

    def wait(self, timeout):
        return {"StatusCode": self.code}

    def logs(self, **kwargs):
        return self.output.encode()

    def remove(self, force):
        pass


NEW_GLIBC = {"--version": (0, "ld.so (Debian GLIBC 2.36-9) stable release version 2.36.")}
# glibc 2.31's loader has no --version (it takes it for a program); its libc says its version.
OLD_GLIBC = {"--version": (127, "--version: error while loading shared libraries: --version: cannot open shared "
                                 "object file"),
             "/lib/x86_64-linux-gnu/libc.so.6": (0, "GNU C Library (Debian GLIBC 2.31-13+deb11u11) stable release "
                                                    "version 2.31.")}


def events():
    seen = []
    return seen, seen.append


def test_an_image_without_glibc_gets_no_handler_and_a_warning_once(state):
    client = FakeClient(answers=None)  # Alpine: no /lib64/ld-linux-x86-64.so.2
    seen, reporter = events()
    assert crash_handler.for_image(client, "alpine-php", reporter) is None
    assert [e.kind for e in seen] == ["run.warning"] and "no glibc" in seen[0].message
    assert client.commands[0]["entrypoint"] == ["/lib64/ld-linux-x86-64.so.2"]
    assert crash_handler.for_image(client, "alpine-php", reporter) is None
    assert len(client.commands) == 1  # read once per image


def test_an_image_with_an_older_glibc_than_the_handler_needs_gets_none(state, monkeypatch, tmp_path):
    client = FakeClient(answers=OLD_GLIBC)
    monkeypatch.setattr(crash_handler, "ensure", lambda client, reporter: Handler(tmp_path, (2, 34)))
    seen, reporter = events()
    assert crash_handler.for_image(client, "old-php", reporter) is None
    assert "glibc 2.31, older than asanlab's crash handler needs (2.34)" in seen[0].message
    assert [c["command"] for c in client.commands] == [["--version"], ["/lib/x86_64-linux-gnu/libc.so.6"]]
    newer = FakeClient(answers=NEW_GLIBC)
    image = FakeImage("sha256:2")  # another image id: read again
    image.attrs["Config"] = {"Env": ["PATH=/usr/bin", "LD_PRELOAD=/usr/lib/libjemalloc.so.2"]}
    newer.get = lambda ref: image
    handler = crash_handler.for_image(newer, "new-php", reporter)
    assert seen[-1].kind == "crash_handler.preload" and "/asanlab/lib/asanlab-crash.so" in seen[-1].message
    assert handler.folder == tmp_path and handler.glibc == (2, 34)
    # The image's own preload stays: the run's environment would replace the image's.
    assert handler.preload == "/asanlab/lib/asanlab-crash.so /usr/lib/libjemalloc.so.2"


def test_a_handler_that_cannot_be_built_leaves_the_run_as_it_was(state, monkeypatch):
    from asanlab.errors import InfraError

    def no_base(client, reporter):
        raise InfraError("base image debian:bookworm is not on this machine and cannot be pulled")

    monkeypatch.setattr(crash_handler, "ensure", no_base)
    seen, reporter = events()
    client = FakeClient(answers=NEW_GLIBC)
    assert crash_handler.for_image(client, "php", reporter) is None
    assert "crash handler is not available (base image debian:bookworm" in seen[0].message


@pytest.mark.parametrize("agent,valgrind,preloaded", [(None, False, True), ("/opt/asanlab/lib/asanlab-agent.so", False, False),
                                                      (None, True, False)])
def test_a_run_mounts_and_preloads_the_handler_only_where_the_image_has_no_agent(state, tmp_path, agent, valgrind,
                                                                                preloaded):
    handler = Handler(tmp_path / "handler", (2, 34))
    opts = run.RunOptions(app=tmp_path / "a.php", image="img", agent=agent, crash_handler=handler, valgrind=valgrind,
                          timeout=60)
    env, mounts = _environment(opts, {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, False)
    assert ("/asanlab/lib/asanlab-crash.so" in env["LD_PRELOAD"]) == preloaded, env
    assert env["LD_PRELOAD"].endswith("/usr/lib/libjemalloc.so.2")  # the user's stays
    if preloaded:
        assert env["ASANLAB_PHP_TRACE_DIR"] == "/asanlab/php" and "ASANLAB_DEADLINE" in env
        assert "ASANLAB_PHP_ORIGINS" not in env  # it records no allocations
        assert mounts[session.PHP_STACK_SUBDIR] == "/asanlab/php"
    s = session.create({"command": ["php", "/app/a.php"], "app": str(tmp_path / "a.php")})
    from asanlab.run.lifecycle import _crash_handler

    handler_used = _crash_handler(opts)
    volumes = _volumes(s, tmp_path / "a.php", [], mounts,
                       libraries=handler_used.folder if handler_used is not None else None)
    assert (volumes.get(str(handler.folder)) == {"bind": "/asanlab/lib", "mode": "ro"}) == preloaded


def test_run_soak_and_reproduce_preload_the_agent_else_the_handler_and_nothing_under_valgrind(monkeypatch, tmp_path):
    from asanlab.image import choice

    class Labelled:
        def __init__(self, labels):
            self.images, self.labels, self.id, self.attrs = self, labels, "sha256:1", {"Architecture": "amd64"}

        def get(self, ref):
            return self

    asked = []
    monkeypatch.setattr(crash_handler, "for_image", lambda client, ref, reporter: asked.append(ref) or Handler(tmp_path, (2, 17)))
    agent = Labelled({"org.asanlab.agent": "/opt/asanlab/lib/asanlab-agent.so"})
    assert choice.preloaded("img", lambda: agent) == ("/opt/asanlab/lib/asanlab-agent.so", None)
    assert choice.preloaded("img", lambda: agent, valgrind=True) == (None, None)
    assert asked == []  # an image with the agent, or Valgrind: no handler is looked for
    assert choice.preloaded("own", lambda: Labelled({})) == (None, Handler(tmp_path, (2, 17))) and asked == ["own"]


@pytest.mark.parametrize("corrupt", [b'{"sha256:1": [2, 3', b"[1, 2]", b'{"sha256:1": "x"}', b"\xff\xfe"])
def test_a_corrupt_glibc_cache_is_read_again_not_a_traceback_on_every_run(state, corrupt):
    """A cache file cut short (an interrupted write) or edited broke every later run until deleted."""
    from asanlab.state import state_dir

    cache = state_dir() / "crash-handler" / "glibc-of-images.json"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(corrupt)
    client = FakeClient(answers=None)
    seen, reporter = events()
    assert crash_handler.for_image(client, "alpine-php", reporter) is None
    assert len(client.commands) == 1  # read from the image again
    assert json.loads(cache.read_text()) == {"sha256:1": None}  # and the cache written whole anew
