"""containers.call (the one way asanlab runs a short command in a container) and
docker_client.docker_errors (the one way Docker's errors become asanlab's), on a fake client.

The fake stands in for Docker on the error paths, which a real daemon cannot be made to take on
demand; that the commands really run is tests/docker's business (build's check, replay --bundle,
replay --symbolize)."""

import pytest
import requests
from docker.errors import APIError, ImageNotFound

from asanlab import bundle, containers
from asanlab.image import check, recipe
from asanlab.reports import symbolize
from asanlab.docker_client import docker_errors
from asanlab.errors import EXIT_INFRA, InfraError, UsageError
from asanlab.session import Session


class FakeContainer:
    def __init__(self, name, wait=None, logs=b"", status=0):
        self.name = name
        self.calls: list[str] = []
        self.removed = 0
        self._wait, self._logs, self._status = wait, logs, status
        self.logs_asked: dict = {}

    def start(self):
        self.calls.append("start")

    def wait(self, timeout=None):
        self.calls.append(f"wait {timeout}")
        if self._wait is not None:
            raise self._wait
        return {"StatusCode": self._status, "Error": None}

    def logs(self, **kwargs):
        self.logs_asked = kwargs
        return self._logs

    def remove(self, force=False):
        assert force, "a running container is removed only by force"
        self.removed += 1


class FakeImage:
    id = "sha256:" + "ab" * 32
    tags = ["asanlab/php:test"]
    labels = {"org.asanlab.extensions": "swoole-6.1.9"}


class FakeClient:
    """create() hands out a FakeContainer whose wait raises `wait` (when given) and whose logs are `logs`."""

    def __init__(self, *, wait=None, logs=b"", status=0, create_error=None, image_error=None):
        self.made: list[tuple[FakeContainer, str, dict]] = []
        outer = self

        class Containers:
            def create(self, image, **kwargs):
                if create_error is not None:
                    raise create_error
                c = FakeContainer(kwargs["name"], wait, logs, status)
                outer.made.append((c, image, kwargs))
                return c

        class Images:
            def get(self, ref):
                if image_error is not None:
                    raise image_error
                return FakeImage()

        self.containers = Containers()
        self.images = Images()

    @property
    def container(self) -> FakeContainer:
        [(c, _, _)] = self.made
        return c


@pytest.fixture(autouse=True)
def _no_keep(monkeypatch):
    monkeypatch.delenv(containers.KEEP_ENV, raising=False)


def test_success_returns_output_and_removes_the_container():
    client = FakeClient(logs="ok \xe9\n".encode("latin-1"), status=3)
    result = containers.call(client, "img", ["sh", "-c", "echo ok"], role="check", timeout=42,
                             environment={"A": "1"}, stderr=False)
    assert result == containers.Result(exit_code=3, output="ok \ufffd\n")  # undecodable bytes replaced
    [(c, image, kwargs)] = client.made
    assert image == "img" and c.calls == ["start", "wait 42"] and c.removed == 1
    assert c.logs_asked == {"stdout": True, "stderr": False}
    assert kwargs["command"] == ["sh", "-c", "echo ok"] and kwargs["environment"] == {"A": "1"}
    # The labels every asanlab container has: orphan handling reads the owner.
    assert kwargs["labels"] == {"org.asanlab.role": "check", "org.asanlab.owner": containers.owner()}
    assert kwargs["name"].startswith("asanlab-check-")


def test_no_environment_is_not_passed_at_all():
    client = FakeClient()
    containers.call(client, "img", ["true"], role="symbolize", timeout=1)
    [(_, _, kwargs)] = client.made
    assert "environment" not in kwargs


# How the Docker SDK's wait(timeout=...) ends when the container outlives it: a read timeout while
# waiting for the answer, or one while reading its body, which requests reports as a ConnectionError.
TIMEOUTS = [requests.exceptions.ReadTimeout("UnixHTTPConnectionPool(host='localhost', port=None): Read timed out."),
            requests.exceptions.ConnectionError("UnixHTTPConnectionPool(host='localhost', port=None): "
                                                "Read timed out.")]


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=["ReadTimeout", "ConnectionError"])
def test_a_wait_that_times_out_removes_the_container(timeout):
    client = FakeClient(wait=timeout)
    with pytest.raises(type(timeout)):
        containers.call(client, "img", ["sleep", "1000"], role="check", timeout=1)
    assert client.container.removed == 1
    with pytest.raises(InfraError, match=r"^the check could not run: .*Read timed out\.$") as e:
        with docker_errors("the check could not run"):
            containers.call(client, "img", ["sleep", "1000"], role="check", timeout=1)
    assert e.value.exit_code == EXIT_INFRA


@pytest.mark.parametrize("error", [APIError("500 Server Error: container wait failed"), KeyboardInterrupt()],
                         ids=["APIError", "KeyboardInterrupt"])
def test_a_wait_that_raises_removes_the_container(error):
    client = FakeClient(wait=error)
    with pytest.raises(type(error)):
        containers.call(client, "img", ["true"], role="bundle", timeout=1)
    assert client.container.removed == 1


def test_a_docker_error_becomes_infra_error_with_the_sentence():
    with pytest.raises(InfraError) as e:
        with docker_errors("could not run the session's image for the bundle"):
            raise APIError("409 Client Error: Conflict")
    assert e.value.message == "could not run the session's image for the bundle: 409 Client Error: Conflict"
    assert e.value.exit_code == EXIT_INFRA and e.value.__cause__ is None


def test_a_bug_is_not_translated():
    """A ValueError is asanlab's own bug: it must reach cli.main as one (exit 70), not as exit 3."""
    with pytest.raises(ValueError, match="a bug"):
        with docker_errors("the instrumentation check could not run"):
            raise ValueError("a bug")
    # Nor are asanlab's own errors, raised inside the block, rewritten.
    with pytest.raises(UsageError, match="^as raised$"):
        with docker_errors("anything"):
            raise UsageError("as raised")


R = recipe.parse('name: x\nphp:\n  version: "8.2.1"\nswoole:\n  version: "6.1.9"\n')
IMAGE = "sha256:" + "cd" * 32


def test_check_keeps_its_message_and_its_command():
    client = FakeClient(wait=APIError("500 Server Error: boom"))
    with pytest.raises(InfraError, match=rf"^the instrumentation check could not run in {IMAGE[:19]}: "
                                         r"500 Server Error: boom$"):
        check.run_checks(client, IMAGE, R)
    [(c, image, kwargs)] = client.made
    assert image == IMAGE and c.removed == 1 and c.calls == ["start", "wait 300"]
    assert kwargs["command"] == ["sh", "/opt/asanlab/scripts/check-instrumented.sh", "swoole"]
    assert kwargs["labels"]["org.asanlab.role"] == "check" and kwargs["environment"] == {"ASANLAB_TOOLS": ""}


def test_check_output_is_parsed_from_both_streams():
    client = FakeClient(logs=b"binary /opt/php/bin/php 0\n")
    result = check.run_checks(client, IMAGE, R)
    assert client.container.logs_asked == {"stdout": True, "stderr": True} and client.container.removed == 1
    assert "/opt/php/bin/php has no AddressSanitizer checks" in result.failures


def test_a_bug_under_check_is_not_a_docker_failure():
    client = FakeClient(logs=None)  # .decode on None: an AttributeError, as a bug in asanlab would be
    with pytest.raises(AttributeError):
        check.run_checks(client, IMAGE, R)
    assert client.container.removed == 1


def test_symbolize_translates_and_keeps_its_usage_error():
    need = {"/opt/php/bin/php": {"0x10"}}
    client = FakeClient(wait=requests.exceptions.ConnectionError("Read timed out."))
    with pytest.raises(InfraError, match=rf"^llvm-symbolizer could not run in {IMAGE[:19]}: Read timed out\.$"):
        symbolize.resolve(client, IMAGE, need)
    [(c, _, kwargs)] = client.made
    assert c.removed == 1 and c.calls == ["start", "wait 300"] and kwargs["labels"]["org.asanlab.role"] == "symbolize"
    assert kwargs["command"] == ["sh", "-c", symbolize.script(need)]
    gone = FakeClient(image_error=ImageNotFound("no such image"))
    with pytest.raises(UsageError, match="is no longer on this machine"):
        symbolize.resolve(gone, IMAGE, need)
    assert gone.made == []
    ok = FakeClient(logs=b"@@asanlab-module /opt/php/bin/php\nmain\n/src/main.c:3:1\n\n")
    assert symbolize.resolve(ok, IMAGE, need) == {("/opt/php/bin/php", "0x10"): {
        "function": "main", "file": "/src/main.c", "line": 3, "column": 1}}
    assert ok.container.logs_asked == {"stdout": True, "stderr": False}


def test_bundle_translates_a_container_that_cannot_be_created(tmp_path):
    s = Session(path=tmp_path, data={"id": "s1", "image": {"id": IMAGE}})
    client = FakeClient(create_error=APIError("500 Server Error: no space left on device"))
    with pytest.raises(InfraError, match="^could not run the session's image for the bundle: 500 Server Error: "
                                         "no space left on device$"):
        bundle._image_facts(client, s)
    ok = FakeClient(logs=b"$ php -v\nPHP 8.2.1\n")
    facts = bundle._image_facts(ok, s)
    [(c, _, kwargs)] = ok.made
    assert c.removed == 1 and c.calls == ["start", "wait 120"] and kwargs["labels"]["org.asanlab.role"] == "bundle"
    assert kwargs["command"] == ["sh", "-c", bundle.PROBE]
    assert kwargs["environment"] == {"ASANLAB_EXTENSIONS": "swoole", "ASAN_OPTIONS": "detect_leaks=0"}
    assert facts.endswith("\n\n$ php -v\nPHP 8.2.1\n") and facts.startswith(f"image {FakeImage.id}\n")


def test_an_empty_agent_label_means_no_agent():
    """A derived image can unset the label (LABEL org.asanlab.agent=""): nothing to preload, and a
    soak must not wait for answers from an agent that is not there."""
    from asanlab.image.choice import agent_path

    class Image:
        def __init__(self, labels):
            self.labels, self.id, self.tags = labels, "sha256:" + "1" * 64, ["x:y"]

    class Images:
        def __init__(self, labels):
            self.labels = labels

        def get(self, ref):
            return Image(self.labels)

    class Client:
        def __init__(self, labels):
            self.images = Images(labels)

    assert agent_path("x:y", lambda: Client({"org.asanlab.agent": ""})) is None
    assert agent_path("x:y", lambda: Client({"org.asanlab.agent": "/opt/a.so"})) == "/opt/a.so"
