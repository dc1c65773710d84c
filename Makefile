# asanlab's everyday commands. `make demo` and `make test` are the README's two set-up commands.
PYTHON ?= python3
SUITE ?= bookworm

.PHONY: install base-image demo test unit docs bench bench-parse bench-speed bench-reproduce

install:
	$(PYTHON) -m pip install --quiet -e '.[test]'

# debian:bookworm made locally (debootstrap + docker import) when no registry can be reached.
base-image:
	@command -v debootstrap >/dev/null || (apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null)
	images/make-base-image.sh $(SUITE) debian:$(SUITE)

# Build the built-in PHP 8.2 recipe (PHP from Debian's source package) and run the demo app.
# Exit code 1 is the expected outcome: the demo app has a real leak and a real double free.
demo: install base-image
	$(PYTHON) -m asanlab demo; code=$$?; [ $$code -eq 1 ] && echo "demo: findings reported as expected (exit 1)"; [ $$code -le 1 ]

# debootstrap makes the base image; docker-registry is the real registry of the push/pull tests;
# h2load (nghttp2-client) is the soak's fast load generator; clang-14 and PHP's headers build the
# agent's C tests (tests/agent) under ASan, UBSan and ThreadSanitizer.
test: install
	@command -v debootstrap >/dev/null && command -v docker-registry >/dev/null && command -v h2load >/dev/null \
	  && command -v clang-14 >/dev/null && command -v php-config8.2 >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq debootstrap docker-registry nghttp2-client clang-14 php8.2-dev >/dev/null)
	$(PYTHON) -m pytest tests

unit: install
	$(PYTHON) -m pytest tests/unit

# The manual: the generated references (docs/reference, from the CLI and the recipe schema), then the
# site in site/. MkDocs comes with the test extras (make install); tests/unit/test_docs.py checks both.
docs:
	$(PYTHON) docs/gen_reference.py
	$(PYTHON) -m mkdocs build --strict --site-dir site

bench: install base-image
	$(PYTHON) bench/build_bench.py

bench-parse: install
	$(PYTHON) bench/parse_bench.py

# Swoole hello world: release vs ASan builds (Swoole from ASANLAB_TEST_SWOOLE_SRC or ../shared/sources/swoole; ab).
bench-speed: install base-image
	@command -v ab >/dev/null || (apt-get update -qq && apt-get install -y -qq apache2-utils >/dev/null)
	$(PYTHON) bench/asan_speed_bench.py

# Minimization of 1,000 recorded requests to the ones that crash a real Swoole server (reproduce --minimize).
bench-reproduce: install base-image
	$(PYTHON) bench/reproduce_bench.py
