"""The app's environment in the container: what PHP needs under the sanitizers, their options with
their precedence, and what is masked when it is written to the session."""

from __future__ import annotations

import re

from ..layout import CONFIG_DIR, LOG_DIR

# Prepended to the app (see asanlab/data/sigterm.php): a plain script as the container's PID 1
# would ignore SIGTERM, and only a normal exit runs LeakSanitizer.
SIGTERM_PREPEND = f"{CONFIG_DIR}/sigterm.php"
SECRET_KEY = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE)", re.I)

# What PHP needs under ASan: the system allocator instead of Zend's arenas, so every allocation is
# visible (USE_ZEND_ALLOC=0, php-src Zend/zend_alloc.c); modules kept loaded, so stacks symbolize at
# exit (ZEND_DONT_UNLOAD_MODULES, php-src Zend/zend_API.c).
PHP_ENV = {"USE_ZEND_ALLOC": "0", "USE_TRACKED_ALLOC": "1", "ZEND_DONT_UNLOAD_MODULES": "1"}
ASAN_DEFAULTS = {
    "log_path": f"{LOG_DIR}/sanitizer",  # one file per process: sanitizer.<pid>
    "detect_leaks": 1,
    "symbolize": 1,
    "dedup_token_length": 3,
    "print_scariness": 1,
    "handle_abort": 1,
    # Allocation stacks through code without frame pointers (libffi, so every FFI call) stop after
    # one frame with the fast unwinder; the slow one reaches the PHP function that allocated.
    "fast_unwind_on_malloc": 0,
    # One behaviour whatever clang built the image: LLVM 15 turned stack use-after-return detection
    # on by default on Linux (clang 14, bookworm's, has it off; clang 19, trixie's, on). Its fake
    # stacks cost about 40% of a Swoole server's requests per second (docs/benchmarks.md).
    "detect_stack_use_after_return": 0,
}
# Frame pointers only (ASan's fast unwinder): 3-4x the requests per second of the slow one
# (docs/benchmarks.md), and complete stacks through PHP, Swoole's coroutines (asanlab's builds report
# their stack switches) and every extension asanlab builds; a stack stops at a system library built
# without frame pointers (libffi, libcrypto), and findings.cut_short says so.
FAST_STACKS = {"fast_unwind_on_malloc": 1}
ORIGIN_LSAN_OPTIONS = {"report_objects": 1}
# ASan and UBSan share one log_path setting (the last one read wins): give both the same.
# asanlab/data/ubsan.supp is copied into each run's config folder (lifecycle).
UBSAN_SUPPRESSIONS = f"{CONFIG_DIR}/ubsan.supp"
UBSAN_DEFAULTS = {"log_path": f"{LOG_DIR}/sanitizer", "print_stacktrace": 1, "suppressions": UBSAN_SUPPRESSIONS}


def options_string(options: dict) -> str:
    return ":".join(f"{k}={v}" for k, v in options.items())


def environment(recipe, user_env: dict[str, str], suppressions: bool,
                asan_options: dict | None = None, *, lsan_options: dict | None = None) -> dict[str, str]:
    """The app's environment. Precedence: asanlab's defaults, then `asan_options` and `lsan_options`
    (a command's own, e.g. soak's), then the recipe's runtime options, then the user's -e."""
    asan = {**ASAN_DEFAULTS, **(asan_options or {})}
    lsan: dict = dict(lsan_options or {})
    ubsan = dict(UBSAN_DEFAULTS)
    if recipe is not None:
        asan.update(recipe.runtime.asan_options)
        lsan.update(recipe.runtime.lsan_options)
        ubsan.update(recipe.runtime.ubsan_options)
        if not recipe.sanitizers.leak:
            asan["detect_leaks"] = 0
    # `-e ASAN_OPTIONS=...` (and LSAN_, UBSAN_) adds to these options rather than replacing them.
    for name, table in (("ASAN_OPTIONS", asan), ("LSAN_OPTIONS", lsan), ("UBSAN_OPTIONS", ubsan)):
        if name in user_env:
            user_env = dict(user_env)
            for item in re.split(r"[:,]", user_env.pop(name)):
                key, eq, value = item.partition("=")
                if key and eq:
                    table[key] = value
    # The per-run log folder is what makes capture work: it must survive any override.
    asan["log_path"], ubsan["log_path"] = ASAN_DEFAULTS["log_path"], UBSAN_DEFAULTS["log_path"]
    lsan.pop("log_path", None)  # asanlab owns the log, whichever table a log_path came in
    if suppressions:
        lsan["suppressions"] = f"{CONFIG_DIR}/lsan.supp"
    env = {**PHP_ENV, "ASAN_OPTIONS": options_string(asan), "UBSAN_OPTIONS": options_string(ubsan)}
    if lsan:
        env["LSAN_OPTIONS"] = options_string(lsan)
    env.update(user_env)
    return env


def masked(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if SECRET_KEY.search(k) else v) for k, v in env.items()}
