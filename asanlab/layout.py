"""Where things are inside the images and containers asanlab makes, and the labels it puts on
them: one definition of each."""

APP_DIR = "/app"  # the app's folder, mounted read-only
LOG_DIR = "/asanlab/logs"  # the sanitizers' log_path folder: session raw/sanitizer
CONFIG_DIR = "/asanlab/config"  # asanlab's files for the run (prepend, suppressions): session config
AGENT_DIR = "/asanlab/agent"  # the agents' answers and live-heap dumps: session agent
CONTROL_DIR = "/asanlab/control"  # what asanlab writes and the app only reads (the soak's trigger): session control, read-only
PHP_STACK_DIR = "/asanlab/php"  # the agent's PHP backtraces of sanitizer errors: session raw/php
STATE_DIR = "/asanlab/state"  # what the app's PHP says of itself to asanlab (sigterm.php's mark): session state
AGENT_PATH = "/opt/asanlab/lib/asanlab-agent.so"  # asanlab's agent in every image it builds (images/agent)
HANDLER_DIR = "/asanlab/lib"  # asanlab's crash handler, mounted read-only into images without the agent
GDB_DIR = "/opt/asanlab/gdb"  # php.gdbinit (php-src's .gdbinit) and swoole.gdbinit, from the image's own sources

LABEL_PREFIX = "org.asanlab"
# On images (render.py writes them into the Dockerfile; others read them).
IMAGE_DIGEST = f"{LABEL_PREFIX}.digest"  # the content digest the tag sha-<digest[:20]> names
IMAGE_AGENT = f"{LABEL_PREFIX}.agent"  # where the agent is: an image without it has no PHP side
IMAGE_EXTENSIONS = f"{LABEL_PREFIX}.extensions"
IMAGE_TOOLS = f"{LABEL_PREFIX}.tools"  # gdb, valgrind: what `run --valgrind` and crash capture need
# "debian:php8.2" when PHP was built from a Debian source package, else "": what `init --from-image`
# needs to rebuild an asanlab image the same way (its PHP is in /opt/php, no Debian package says so).
IMAGE_PHP_SOURCE = f"{LABEL_PREFIX}.php-source"
# On containers (containers.py).
CONTAINER_ROLE = f"{LABEL_PREFIX}.role"  # run, check, symbolize, bundle
CONTAINER_OWNER = f"{LABEL_PREFIX}.owner"  # host:pid:start of the asanlab process that made it
CONTAINER_SESSION = f"{LABEL_PREFIX}.session"
CONTAINER_SESSION_PATH = f"{LABEL_PREFIX}.session-path"
