# gdb's part of a crash report: sourced by `gdb -p PID -ex 'set $asanlab_tid = TID' -x THIS`, which
# asanlab's agent starts from its handler in the crashing process (images/agent/crash.c). Each part
# is headed "asanlab-gdb <part>" for asanlab/reports/crash.py; a part that fails says why and the
# next one runs.
import os

import gdb

GDB_DIR = "/opt/asanlab/gdb"  # asanlab/layout.py: php.gdbinit and swoole.gdbinit, where the image has them


def part(name, command):
    print(f"asanlab-gdb {name}", flush=True)
    try:
        gdb.execute(command)
    except gdb.error as e:
        print(f"asanlab-gdb failed: {e}", flush=True)


def select_crashing_thread():
    tid = int(gdb.parse_and_eval("$asanlab_tid"))
    for thread in gdb.selected_inferior().threads():
        if thread.ptid[1] == tid:
            thread.switch()


def select_faulting_frame():
    """The frame the signal interrupted: the one under the kernel's trampoline, for its registers."""
    frame = gdb.newest_frame()
    while frame is not None and frame.type() != gdb.SIGTRAMP_FRAME:
        frame = frame.older()
    if frame is not None and frame.older() is not None:
        frame.older().select()


gdb.execute("set pagination off")
gdb.execute("set width 0")
gdb.execute("set print frame-arguments scalars")
select_crashing_thread()
part("bt", "bt full 64")
select_faulting_frame()
part("registers", "info registers")
for script, command in (("php.gdbinit", "zbacktrace"), ("swoole.gdbinit", "co_bt")):
    path = os.path.join(GDB_DIR, script)
    if os.path.exists(path):
        try:
            gdb.execute(f"source {path}")
        except gdb.error as e:
            print(f"asanlab-gdb failed: {script}: {e}", flush=True)
            continue
        part(command, command)
