"""Reports -> findings: signatures, frame classes, start-up noise folded away. Pure.

A finding is one bug: every report with the same signature (kind + the top meaningful frames,
no addresses, PIDs or line numbers) counts toward it, across processes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import Enum

from .sanitizers import Frame, Report
from .types import Tool


class Category(str, Enum):
    """What a finding means for the user. A str, as in the JSON output."""

    ERROR = "error"  # ASan: a memory error
    UNDEFINED = "undefined"  # UBSan
    LEAK = "leak"  # never freed, made while the app served
    STARTUP_LEAK = "startup-leak"  # never freed, made while PHP, an extension or the server started: not a failure

    def __str__(self) -> str:
        return self.value

TOP_FRAMES = 3

# Frames that say nothing about the bug: the sanitizer runtime, the allocator, libc, libffi's
# trampolines. Matched against the function name or the module/file.
RUNTIME_FUNCTIONS = re.compile(
    r"^(__asan|__lsan|__ubsan|__sanitizer|__interceptor_|___interceptor_|__wrap_|"
    r"(malloc|calloc|realloc|free|posix_memalign|memalign|aligned_alloc|valloc|strdup|strndup|"
    r"memcpy|memmove|memset|strlen|strcpy|strncpy)$|operator new|operator delete|"
    r"__libc_start|_start$|__GI_|ffi_call|ffi_call_unix64|ffi_call_int)")
RUNTIME_LOCATIONS = re.compile(r"(compiler-rt|/sanitizer_common/|/asan/|/lsan/|/ubsan/|libc\.so|libc-|libffi\.so|"
                               r"libstdc\+\+|ld-linux|libpthread)")
# Allocations made while PHP or an extension starts up (or a request starts), which Swoole
# workers never free because they exit without module shutdown: about 165 records per worker.
STARTUP_FUNCTIONS = re.compile(
    r"^(zm_startup_|zm_activate_|php_module_startup|zend_startup|zend_register_functions|"
    r"zend_register_internal_|do_register_internal_class|zend_register_module_ex|zend_register_ini_entries|"
    r"php_swoole_load_library|php_request_startup|zend_activate|php_init_config|sapi_startup|"
    r"zend_startup_module|zend_register_class_alias|zend_declare_|php_register_internal_extensions|"
    r"register_class_|zend_register_constant|zend_interned_strings_init|zend_register_list_destructors|"
    r"zend_post_startup|php_startup_|zm_info_|zend_register_auto_global|zend_ini_startup)")


# Where asanlab's images build each phpize extension (images/Dockerfile.j2): /usr/src/ext-NAME/.
EXTENSION_SOURCE = re.compile(r"/usr/src/ext-(?P<name>[^/]+)/")


def frame_class(f: Frame) -> str:
    """runtime (the sanitizer's own), libc (libc, libstdc++, libffi, the loader), zend (the engine:
    Zend/, main/, sapi/, TSRM/), php-ext (an extension bundled with PHP: ext/), swoole, extension
    (another extension, built with phpize or loaded from PHP's extension folder), user (the app's FFI
    libraries and anything else)."""
    fn = f.function or ""
    loc = f.file or f.module or ""
    if fn.startswith(("__asan", "__lsan", "__ubsan", "__sanitizer", "__interceptor_")) or "compiler-rt" in loc:
        return "runtime"
    if re.search(r"(libc\.so|libc-|ld-linux|libpthread|libstdc\+\+|libffi\.so)", loc) or \
            RUNTIME_FUNCTIONS.match(fn):
        return "libc"
    ext = EXTENSION_SOURCE.search(loc)
    if ext:
        return "swoole" if ext.group("name") == "swoole" else "extension"
    if "swoole" in loc or fn.startswith(("swoole", "php_swoole", "zim_swoole", "zif_swoole", "Swoole")):
        return "swoole"
    if f.module and "/extensions/" in f.module:
        return "extension"
    if re.search(r"(^|/)(Zend|main|sapi|TSRM)/", loc) or fn.startswith(("zend_", "_zend_", "php_", "execute_ex",
                                                                         "ZEND_", "_emalloc", "_efree")):
        return "zend"
    if re.search(r"(^|/)ext/", loc) or fn.startswith(("zif_", "zim_")):
        return "php-ext"
    return "user"


# Where a whole stack ends: the program's entry, a thread's start (a Swoole coroutine's first frame
# is in swoole.so, an extension, so never taken for a cut).
STACK_BOTTOMS = re.compile(r"^(_start|main|__libc_start_main|__libc_start_call_main|clone3?|start_thread)$")


def cut_short(frames: list[Frame]) -> str | None:
    """The shared library where a stack unwound with frame pointers stopped (ASan's fast unwinder:
    libffi, libcrypto and other system libraries are built without them), or None when the stack
    looks whole: it ends at a program's or thread's start, in PHP or one of its extensions, or at
    the frame limit. Frames in no module after it are the unwinder reading a wrong frame pointer."""
    frames = frames[:next((i for i, f in enumerate(frames) if f.misread), len(frames))]
    if not frames:
        return None
    last = frames[-1]
    name = (last.module or "").rsplit("/", 1)[-1]
    # A stack that reached a program's or thread's start is whole, whatever frames of libc follow
    # it unsymbolized (`main` <- libc.so.6+0x271ca: the start-up code in libc, not a stop there).
    if any(STACK_BOTTOMS.match(f.function or "") for f in frames[-3:]):
        return None
    if ".so" not in name or \
            frame_class(last) in ("zend", "php-ext", "swoole", "extension", "runtime"):
        return None
    return name


def meaningful(frames: list[Frame]) -> list[Frame]:
    # Nothing after unwinder garbage: a signature must not depend on which coroutine stack ran.
    cut = next((i for i, f in enumerate(frames) if f.misread), len(frames))
    frames = frames[:cut] or frames
    out = [f for f in frames
           if not (RUNTIME_FUNCTIONS.match(f.function or "") or RUNTIME_LOCATIONS.search(f.file or f.module or ""))]
    return out or frames


def _frame_key(f: Frame) -> str:
    if f.function:
        return re.sub(r"\+0x[0-9a-f]+$", "", f.function)
    if f.file:  # UBSan without a stack: the file, not the line (lines move between builds)
        return f.file.rsplit("/", 1)[-1]
    # Unsymbolized: the module's name stays, the offset does (it is stable within one build).
    return f"{(f.module or '?').rsplit('/', 1)[-1]}+{f.offset}"


# Swoole's server set-up in the master (before fork, so every worker inherits it): the server
# object, its ports, pipes and process pool live until exit and are never freed. Also each reactor
# thread's set-up, once per thread as the server starts (Swoole 5.1 never frees its message buffer:
# 64 KiB per thread, seen in the master of a clean 5.1.8 server).
SERVER_SETUP_FUNCTIONS = re.compile(
    r"^(zim_swoole_(http_|websocket_|redis_)?server_(__construct|start|set|on|addlistener|listen|addprocess)|"
    r"swoole::Server::(start|create|add_port|add_worker|init_|start_|create_)|swoole::ProcessPool::(create|start)|"
    r"swoole::ProcessFactory::|swoole::Factory::|swoole::ReactorThread::init\b)")
# A PHP callback run by the server (a request, a task, a timer): what is allocated under it is the app's.
CALLBACK_FUNCTIONS = re.compile(r"^(sw_zend_call_function_ex|zend::function::call|php_swoole_\w*on[A-Z]\w*)")


# The interpreter entering a script: what it runs there, outside any callback, runs once.
SCRIPT_ENTRY = "php_execute_script"
VM_ENTRY = ("execute_ex", "zend_execute", "zend_execute_scripts")


def is_startup(r: Report) -> bool:
    if not r.is_leak:
        return False
    if r.objects and r.allocated_outside_php == len(r.objects):
        # asanlab's agent saw every object allocated while no PHP code ran: start-up (or compiling
        # the script), whatever the C stack says; one cut short in a library without frame pointers
        # (ASan's fast unwinder) says nothing.
        return True
    names = [f.function or "" for f in r.frames]
    if any(STARTUP_FUNCTIONS.match(n) for n in names):
        return True
    if any(CALLBACK_FUNCTIONS.match(n) for n in names):
        return False
    return any(SERVER_SETUP_FUNCTIONS.match(n) for n in names) or _script_set_up(r.frames, names)


def _script_set_up(frames: list[Frame], names: list[str]) -> bool:
    """A PHP value the script's top level made (a closure, an object, an array) that was still
    held at exit: in a Swoole master, the callbacks registered before $server->start(), which the
    server holds until it exits. The engine alone made it (no extension or FFI frame between the
    allocator and the VM), so it is not native memory an extension lost, and it is made once: the
    top level runs once, and every request runs under a callback or a coroutine."""
    if SCRIPT_ENTRY not in names:
        return False
    vm = next((i for i, n in enumerate(names) if n in VM_ENTRY), None)
    if vm is None:
        return False
    made_by = [f for f in frames[:vm] if frame_class(f) not in ("runtime", "libc")]
    return bool(made_by) and all(frame_class(f) == "zend" for f in made_by)


def signature(r: Report) -> str:
    frames = meaningful(r.frames)[:TOP_FRAMES]
    kind = "leak" if r.is_leak else r.kind
    if r.is_undefined:
        # The message minus its values: "signed integer overflow: 2147483647 + 1 ..." -> shape only.
        kind = "ubsan: " + re.sub(r"0x[0-9a-f]+|-?\d+", "N", r.message)[:120]
    keys = [kind] + [_frame_key(f) for f in frames]
    if r.is_leak and r.php is not None and r.php.allocated_objects and cut_short(r.frames):
        # The C stack stops in a library (every FFI call's is the same two frames): the PHP code that
        # allocated tells the leaks apart. Function and file, not the line, which moves with edits.
        app = r.php.app_frame() or r.php.frames[0]
        keys.append(f"php {app.function} {(app.file or '').rsplit('/', 1)[-1]}".rstrip())
    return " | ".join(keys)


@dataclass
class Finding:
    signature: str
    id: str  # short, stable hash of the signature
    tool: str
    kind: str
    category: Category
    count: int = 0
    pids: list[int] = field(default_factory=list)
    leaked_bytes: int = 0
    leaked_objects: int = 0
    incomplete: int = 0
    example: Report | None = None

    @property
    def is_leak(self) -> bool:
        return self.category in (Category.LEAK, Category.STARTUP_LEAK)

    @property
    def top_frame(self) -> Frame | None:
        frames = meaningful(self.example.frames) if self.example else []
        return frames[0] if frames else None

    @property
    def cut_short(self) -> str | None:
        """For a leak from ASan or LeakSanitizer: the library its allocation stack stopped in."""
        ex = self.example
        return cut_short(ex.frames) if ex and ex.is_leak and ex.tool in (Tool.ASAN, Tool.LSAN) else None

    def to_dict(self) -> dict:
        return {
            "id": self.id, "signature": self.signature, "tool": self.tool, "kind": self.kind,
            "category": self.category, "count": self.count, "pids": self.pids,
            "leaked_bytes": self.leaked_bytes, "leaked_objects": self.leaked_objects,
            "incomplete": self.incomplete, "cut_short": self.cut_short,
            "example": self.example.to_dict() if self.example else None,
        }


SEVERITY = {Category.ERROR: 0, Category.UNDEFINED: 1, Category.LEAK: 2, Category.STARTUP_LEAK: 3}


def category(r: Report) -> Category:
    if r.is_leak:
        return Category.STARTUP_LEAK if is_startup(r) else Category.LEAK
    if r.is_undefined:
        return Category.UNDEFINED
    return Category.ERROR


def group(reports: list[Report]) -> list[Finding]:
    """One finding per signature, worst first: errors, then UB, then leaks by bytes."""
    by_sig: dict[str, Finding] = {}
    for r in reports:
        sig = signature(r)
        f = by_sig.get(sig)
        if f is None:
            f = by_sig[sig] = Finding(signature=sig, id=hashlib.sha256(sig.encode()).hexdigest()[:12],
                                      tool=r.tool, kind=r.kind, category=category(r), example=r)
        elif f.example.php is None and r.php is not None:
            f.example = r  # the example that names its PHP code
        f.count += 1
        if r.pid is not None and r.pid not in f.pids:
            f.pids.append(r.pid)
        f.leaked_bytes += r.leaked_bytes or 0
        f.leaked_objects += r.leaked_objects or 0
        if not r.complete:
            f.incomplete += 1
    return sorted(by_sig.values(), key=lambda f: (SEVERITY[f.category], -f.leaked_bytes, -f.count, f.signature))


def failing(findings: list[Finding]) -> list[Finding]:
    """The findings that fail a run: all but start-up/shutdown leaks."""
    return [f for f in findings if f.category is not Category.STARTUP_LEAK]


def new_since(findings: list[Finding], baseline: list[Finding]) -> list[Finding]:
    """Findings whose signature the baseline lacks, or whose count grew since it."""
    before = {f.signature: f.count for f in baseline}
    return [f for f in findings if f.signature not in before or f.count > before[f.signature]]
