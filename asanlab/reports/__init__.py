"""From logs to findings: sanitizer logs parsed (sanitizers.py, valgrind.py) into reports
(types.py) with their PHP side (php_stack.py), grouped into findings (findings.py), suppressed
(suppressions.py), symbolized (symbolize.py), rendered (text.py, export.py) and gated (gate.py)."""
