"""Where things are inside the containers asanlab starts: one definition of each path."""

APP_DIR = "/app"  # the app's folder, mounted read-only
LOG_DIR = "/asanlab/logs"  # the sanitizers' log_path folder: session raw/sanitizer
CONFIG_DIR = "/asanlab/config"  # asanlab's files for the run (prepend, suppressions): session config
AGENT_DIR = "/asanlab/agent"  # the soak's trigger and the agents' answers: session agent
PHP_STACK_DIR = "/asanlab/php"  # the agent's PHP backtraces of sanitizer errors: session raw/php
STATE_DIR = "/asanlab/state"  # what the app's PHP says of itself to asanlab (sigterm.php's mark): session state
