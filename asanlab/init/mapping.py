"""From what an image (or composer.json) says to the keys of a recipe. Pure: no Docker, no files.

asanlab builds PHP with --disable-all plus the extensions it needs itself (ffi, sockets, posix,
pcntl: images/render.py), so every other extension the production PHP has must be switched on by
name. The tables below say how: PHP's own extensions by a configure flag and the Debian -dev
package it needs, Swoole's features by its configure flags, other extensions as PECL releases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import UsageError
from ..image.recipe import SWOOLE_PHP_SUPPORT, minor, version_tuple
from ..image.render import BASE_PHP_CONFIGURE
from .facts import ImageFacts

# Always there, whatever configure is told.
ALWAYS = {"core", "date", "hash", "json", "pcre", "random", "reflection", "spl", "standard"}
# What asanlab's own build adds (BASE_PHP_CONFIGURE): present in the rebuilt PHP in any case.
ADDED = {"ffi", "sockets", "posix", "pcntl"}
assert all(f"--enable-{e}" in BASE_PHP_CONFIGURE or f"--with-{e}" in BASE_PHP_CONFIGURE for e in ADDED)

LIBXML = ("--with-libxml", "libxml2-dev")
# PHP's bundled extensions: extension -> (configure flags, Debian build packages).
BUNDLED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bcmath": (("--enable-bcmath",), ()),
    "bz2": (("--with-bz2",), ("libbz2-dev",)),
    "calendar": (("--enable-calendar",), ()),
    "ctype": (("--enable-ctype",), ()),
    "curl": (("--with-curl",), ("libcurl4-openssl-dev",)),
    "dba": (("--enable-dba",), ()),
    "dom": (("--enable-dom", LIBXML[0]), (LIBXML[1],)),
    "exif": (("--enable-exif",), ()),
    "fileinfo": (("--enable-fileinfo",), ()),
    "filter": (("--enable-filter",), ()),
    "ftp": (("--enable-ftp",), ()),
    "gd": (("--enable-gd",), ("libpng-dev",)),
    "gettext": (("--with-gettext",), ()),
    "gmp": (("--with-gmp",), ("libgmp-dev",)),
    "iconv": (("--with-iconv",), ()),
    "intl": (("--enable-intl",), ("libicu-dev",)),
    "libxml": ((LIBXML[0],), (LIBXML[1],)),
    "mbstring": (("--enable-mbstring",), ("libonig-dev",)),
    "mysqli": (("--with-mysqli",), ()),
    "mysqlnd": (("--enable-mysqlnd",), ()),
    "openssl": (("--with-openssl",), ("libssl-dev",)),
    "pdo": (("--enable-pdo",), ()),
    "pdo_mysql": (("--enable-pdo", "--with-pdo-mysql"), ()),
    "pdo_pgsql": (("--enable-pdo", "--with-pdo-pgsql"), ("libpq-dev",)),
    "pdo_sqlite": (("--enable-pdo", "--with-pdo-sqlite"), ("libsqlite3-dev",)),
    "pgsql": (("--with-pgsql",), ("libpq-dev",)),
    "phar": (("--enable-phar",), ()),
    "readline": (("--with-libedit",), ("libedit-dev",)),
    "session": (("--enable-session",), ()),
    "shmop": (("--enable-shmop",), ()),
    "simplexml": (("--enable-simplexml", LIBXML[0]), (LIBXML[1],)),
    "soap": (("--enable-soap", LIBXML[0]), (LIBXML[1],)),
    "sodium": (("--with-sodium",), ("libsodium-dev",)),
    "sqlite3": (("--with-sqlite3",), ("libsqlite3-dev",)),
    "sysvmsg": (("--enable-sysvmsg",), ()),
    "sysvsem": (("--enable-sysvsem",), ()),
    "sysvshm": (("--enable-sysvshm",), ()),
    "tidy": (("--with-tidy",), ("libtidy-dev",)),
    "tokenizer": (("--enable-tokenizer",), ()),
    "xml": (("--enable-xml", LIBXML[0]), (LIBXML[1],)),
    "xmlreader": (("--enable-xmlreader", LIBXML[0]), (LIBXML[1],)),
    "xmlwriter": (("--enable-xmlwriter", LIBXML[0]), (LIBXML[1],)),
    "xsl": (("--with-xsl", LIBXML[0]), (LIBXML[1], "libxslt1-dev")),
    "zip": (("--with-zip",), ("libzip-dev",)),
    "zlib": (("--with-zlib",), ("zlib1g-dev",)),
}
# Extensions from PECL that build with phpize alone or with these Debian packages.
PECL: dict[str, tuple[str, ...]] = {
    "apcu": (), "ast": (), "ds": (), "igbinary": (), "inotify": (), "msgpack": (), "pcov": (), "redis": (),
    "uuid": ("uuid-dev",), "yaml": ("libyaml-dev",), "event": ("libevent-dev",), "mongodb": ("libssl-dev",),
    "memcached": ("libmemcached-dev",), "imagick": ("libmagickwand-dev",), "amqp": ("librabbitmq-dev",),
    "rdkafka": ("librdkafka-dev",), "protobuf": (), "excimer": (),
}
# Extensions that must be built before others that use them (redis and memcached with igbinary/msgpack).
ORDER = ("igbinary", "msgpack", "apcu")
# Swoole's `php --ri swoole` rows -> its configure flags and Debian build packages.
SWOOLE_FEATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sockets": (("--enable-sockets",), ()),
    "openssl": (("--enable-openssl",), ("libssl-dev",)),  # Swoole 6.2+: always on, the switch is gone
    "curl-native": (("--enable-swoole-curl",), ("libcurl4-openssl-dev",)),
    "c-ares": (("--enable-cares",), ("libc-ares-dev",)),
    "brotli": ((), ("libbrotli-dev",)),  # on wherever libbrotli-dev is installed (5.1: yes, 6.x: auto)
    "zstd": (("--enable-zstd",), ("libzstd-dev",)),
    "mysqlnd": (("--enable-mysqlnd",), ()),
    "coroutine_pgsql": (("--enable-swoole-pgsql",), ("libpq-dev",)),
    "coroutine_sqlite": (("--enable-swoole-sqlite",), ("libsqlite3-dev",)),
    "io_uring": (("--enable-iouring",), ("liburing-dev",)),
    "thread": (("--enable-swoole-thread",), ()),
}
# Rows that name how Swoole was built, not a feature a recipe can ask for.
SWOOLE_BUILT_IN = {"author", "version", "built", "host byte order", "coroutine", "epoll", "eventfd", "signalfd",
                   "accept4", "cpu_affinity", "spinlock", "rwlock", "http2", "json", "curl-version", "zlib",
                   "mutex_timedlock", "pthread_barrier", "futex", "dtls", "execinfo", "boost stacktrace", "pcre",
                   "debug", "trace_log", "swoole"}
# Debian releases asanlab knows a clang for (trixie has no clang-14, the default).
CLANG_OF = {"bookworm": None, "trixie": 19}
SAFE = re.compile(r"[^\x20-\x7e]")  # what of a fact may reach a comment: one printable line


@dataclass
class Plan:
    """A recipe's keys and the comments that say where each came from, or why something is left out."""

    name: str
    base_image: str = "debian:bookworm"
    compiler_version: int | None = None
    php_version: str = "8.2"
    php_debian: str | None = None
    php_configure: list[str] = field(default_factory=list)
    php_zts: bool = False
    swoole_version: str | None = None
    swoole_configure: list[str] = field(default_factory=list)
    extensions: list[tuple[str, str]] = field(default_factory=list)  # (name, version)
    build_packages: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # comment lines at the top
    notes: dict[str, list[str]] = field(default_factory=dict)  # section -> comment lines
    left_out: list[str] = field(default_factory=list)  # one comment line each

    def configure(self, flags, packages=()) -> None:
        self.php_configure += [f for f in flags if f not in self.php_configure]
        self.packages(packages)

    def packages(self, names) -> None:
        self.build_packages += [p for p in names if p not in self.build_packages]


def default_plan(name: str) -> Plan:
    """Plain `asanlab init`: the built-in default recipe (data/default.yml), as a commented file."""
    from .. import project
    from ..image import recipe as recipes

    r = recipes.load(project.default_recipe())
    swoole = next(e for e in r.all_extensions if e.name == "swoole")
    plan = Plan(name=name, php_version=r.php.version, php_debian=r.php.source.debian,
                php_configure=list(r.php.configure), swoole_version=swoole.version,
                swoole_configure=list(swoole.configure), build_packages=list(r.build_packages))
    plan.header = ["Written by `asanlab init`: asanlab's built-in default. `asanlab init --from-image IMAGE` writes "
                   "one that matches a production image."]
    plan.notes["php"] = ["The PHP of a Debian bookworm server: Debian's php8.2-cli and its usual modules, built from "
                         "Debian's source package."]
    plan.notes["swoole"] = [f"Swoole {swoole.version} with sockets, OpenSSL and brotli."]
    return plan


def shown(text: str, limit: int = 80) -> str:
    """A fact from the image as it may appear in a comment: no newline, no YAML, bounded."""
    return SAFE.sub("?", text)[:limit]


def from_image(facts: ImageFacts, image: str, name: str, php_only: bool = False) -> Plan:
    if not facts.swoole and not php_only:
        raise UsageError(f"image {shown(image, 120)}: its PHP {shown(facts.php_version)} has no Swoole extension",
                         hint="asanlab init --from-image reproduces a Swoole server's image; --php-only writes a "
                              "recipe for its PHP alone")
    plan = Plan(name=name)
    plan.header.append(f"Written by `asanlab init --from-image {shown(image, 120)}`: the PHP of that image, rebuilt "
                       "with the sanitizers.")
    _base(plan, facts)
    _php(plan, facts)
    for ext in sorted(facts.extensions):
        if ext in ALWAYS or ext in ADDED or ext == "swoole" or ext in facts.zend_extensions:
            continue
        if ext in BUNDLED:
            flags, packages = BUNDLED[ext]
            plan.configure(flags, packages)
        elif ext in PECL and re.fullmatch(r"\d+\.\d+(\.\d+)?", facts.extensions[ext] or ""):
            plan.extensions.append((ext, facts.extensions[ext]))
            plan.packages(PECL[ext])
        elif ext in PECL:
            plan.left_out.append(f"{shown(ext)}: a PECL extension whose version "
                                 f"({shown(facts.extensions[ext] or 'none')}) is not a release number: add it "
                                 "under extensions: with the release to build")
        else:
            plan.left_out.append(f"{shown(ext)} {shown(facts.extensions[ext] or '')}: an extension asanlab does not "
                                 "know how to build; add it under extensions: (name, version, source) if it matters")
    for ext in sorted(facts.zend_extensions):
        plan.left_out.append(f"{shown(ext)} {shown(facts.zend_extensions[ext] or '')}: a zend_extension (opcache, "
                             "xdebug...); asanlab's images run without it (it changes how PHP allocates and runs "
                             "code)")
    plan.extensions.sort(key=lambda e: (ORDER.index(e[0]) if e[0] in ORDER else len(ORDER), e[0]))
    if facts.swoole:
        _swoole(plan, facts.swoole)
    else:
        plan.notes["swoole"] = ["The image has no Swoole: this recipe builds PHP alone."]
    missing = sorted(ADDED - set(facts.extensions))
    if missing:
        plan.notes["php"] = plan.notes.get("php", []) + [
            f"asanlab adds {', '.join(missing)} (its own build needs them): the image had not."]
    return plan


def _base(plan: Plan, facts: ImageFacts) -> None:
    if facts.os_id == "debian" and facts.os_codename in CLANG_OF:
        plan.base_image = f"debian:{facts.os_codename}"
        plan.compiler_version = CLANG_OF[facts.os_codename]
    else:
        seen = f"{shown(facts.os_id or 'an unknown OS')} {shown(facts.os_codename)}".strip()
        plan.notes["base_image"] = [f"The image runs {seen}; asanlab builds on Debian (bookworm or trixie), so "
                                    "PHP and its extensions are rebuilt there."]


def _php(plan: Plan, facts: ImageFacts) -> None:
    v = facts.php_version
    if facts.debian_php and plan.base_image == f"debian:{facts.os_codename}":
        plan.php_version, plan.php_debian = minor(v), facts.debian_php
        plan.notes["php"] = [f"PHP {shown(v)} is Debian's package {shown(facts.debian_php)} "
                             f"({shown(facts.debian_php_version or '?')}): built from Debian's source package of "
                             "the same name."]
    elif facts.asanlab_php_debian and plan.base_image == f"debian:{facts.os_codename}":
        plan.php_version, plan.php_debian = minor(v), facts.asanlab_php_debian
        plan.notes["php"] = [f"PHP {shown(v)} was built by asanlab from Debian's source package "
                             f"{shown(facts.asanlab_php_debian)}: built the same way."]
    else:
        plan.php_version = v
        plan.notes["php"] = [f"PHP {shown(v)}: built from php.net's release of that version."]
    if facts.zts:
        plan.php_zts = True
    if facts.debug:
        plan.notes["php"].append("The image's PHP is a debug build; this one is not (php.debug: true makes it one).")


def _swoole(plan: Plan, rows: dict[str, str]) -> None:
    version = rows.get("version", "")
    line = ".".join(version.split(".")[:2])
    support = SWOOLE_PHP_SUPPORT.get(line)
    if not re.fullmatch(r"\d+\.\d+\.\d+", version) or support is None:
        plan.left_out.append(f"Swoole {shown(version)}: a version asanlab does not know how to build (it knows the "
                             f"{', '.join(SWOOLE_PHP_SUPPORT)} lines)")
        return
    if not version_tuple(support[0]) <= version_tuple(minor(plan.php_version)) <= version_tuple(support[1]):
        plan.left_out.append(f"Swoole {version}: supports PHP {support[0]} to {support[1]}, not {plan.php_version}")
        return
    plan.swoole_version = version
    features = []
    for key, value in rows.items():
        if key in SWOOLE_FEATURES:
            flags, packages = SWOOLE_FEATURES[key]
            if key == "openssl" and version_tuple(version) >= (6, 2):
                flags = ()  # 6.2 always builds it
            if key == "thread" and not plan.php_zts:
                continue
            plan.swoole_configure += [f for f in flags if f not in plan.swoole_configure]
            plan.packages(packages)
            features.append(key)
        elif key not in SWOOLE_BUILT_IN:
            plan.left_out.append(f"Swoole's {shown(key)} ({shown(value)}): a feature asanlab does not know how to "
                                 "switch on; add its configure flag under swoole.configure if it matters")
    if "brotli" not in rows:
        plan.swoole_configure.append("--disable-brotli")  # it would be on wherever libbrotli-dev is found
    if any(k in rows for k in ("curl-native",)):
        plan.configure(BUNDLED["curl"][0], BUNDLED["curl"][1])  # Swoole's curl hooks need PHP's curl
    plan.notes["swoole"] = [f"Swoole {version} with {', '.join(features) or 'no optional feature'}."]
