"""Reproduce a recorded finding: replay a session's traffic against fresh containers (target.py,
replay.py), shrink it to the requests that matter (minimize.py), and keep those as a reproducer
bundle that runs anywhere (reproducer.py). source.py reads what a reproduction starts from."""
