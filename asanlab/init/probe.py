"""Reading a production image: run it once, read-only, without network, removed after.

The script is asanlab's own and fixed; the PHP code it runs is passed in an environment variable,
so nothing of the image or of the command line is ever spliced into a shell line.
"""

from __future__ import annotations

from .. import containers
from ..docker_client import docker_errors
from ..errors import UsageError
from .facts import ImageFacts, parse

OUTPUT_LIMIT = 1 << 20
# An image built with the sanitizers (asanlab's own, or a debug build elsewhere): its leak check at
# exit needs ptrace, which the probe's container does not get, and would fail a healthy php.
QUIET_SANITIZERS = {"ASAN_OPTIONS": "detect_leaks=0", "LSAN_OPTIONS": "detect_leaks=0"}  # a PHP with every extension prints about 10 KB here

# Each step opens a section (facts.sections); `@@facts N` carries php's exit status.
SCRIPT = r"""
echo "@@os"; cat /etc/os-release 2>/dev/null
echo "@@dpkg"; dpkg-query -W -f '${Package} ${Version}\n' 2>/dev/null | grep '^php'
echo "@@php"; command -v php
if command -v php >/dev/null; then
  out=$(php -r "$ASANLAB_PROBE" 2>&1); status=$?
  echo "@@facts $status"; echo "$out"
  echo "@@swoole"; php --ri swoole 2>&1
fi
echo "@@end"
"""
# The ini files the image loads are part of its PHP: extensions are loaded there.
PHP = r"""
$e = []; foreach (get_loaded_extensions() as $n) { $e[$n] = (string) phpversion($n); }
$z = []; foreach (get_loaded_extensions(true) as $n) { $z[$n] = (string) phpversion($n); }
ob_start(); phpinfo(INFO_GENERAL); $i = ob_get_clean();
preg_match('/^Configure Command => (.*)$/m', $i, $m);
echo json_encode(['version' => PHP_VERSION, 'zts' => PHP_ZTS, 'debug' => PHP_DEBUG, 'extensions' => $e,
                  'zend_extensions' => $z, 'configure' => $m[1] ?? '']), "\n";
"""


def probe(client, image: str) -> ImageFacts:
    from docker.errors import APIError, ImageNotFound

    with docker_errors(f"reading image {image}"):
        try:
            labels = client.images.get(image).labels or {}
        except ImageNotFound:
            raise UsageError(f"image {image}: not on this machine", hint=f"`docker pull {image}` first") from None
        try:
            result = containers.call(client, image, ["-c", SCRIPT], role="init", timeout=120, entrypoint=["sh"],
                                     environment={"ASANLAB_PROBE": PHP, **QUIET_SANITIZERS}, limit=OUTPUT_LIMIT, read_only=True,
                                     network_disabled=True, tmpfs={"/tmp": "size=16m"}, cap_drop=["ALL"],
                                     security_opt=["no-new-privileges"])
        except APIError as e:
            why = str(e.explanation or e)
            if "executable file not found" not in why and "no such file" not in why.lower():
                raise
            raise UsageError(f"image {image}: has no shell (`sh`); asanlab init reads an image by running a shell "
                             "in it once") from None
    return parse(result.output, image, labels)
