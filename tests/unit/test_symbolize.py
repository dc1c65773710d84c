from asanlab.reports import symbolize
from asanlab.reports.sanitizers import parse

UNSYMBOLIZED = """==1==ERROR: AddressSanitizer: attempting double-free on 0x606000013640 in thread T0:
    #0 0x55b933884b52 in free (/opt/php/bin/php+0x1884b52) (BuildId: 5aa5)
    #1 0x7fe51185df79  (/lib/x86_64-linux-gnu/libffi.so.8+0x6f79) (BuildId: 4b5e)
    #2 0x55b93403e07d  (/opt/php/bin/php+0xc3e07d) (BuildId: 5aa5)
    #3 0x55b93559c2ba  (/opt/php/bin/php+0x219c2ba) (BuildId: 5aa5)
    #4 0x7fe51167c249  (<unknown module>)
SUMMARY: AddressSanitizer: double-free (/opt/php/bin/php+0x1884b52) in free
"""

# What llvm-symbolizer prints for those addresses (its LLVM output style), one block per address.
ANSWER = """@@asanlab-module /lib/x86_64-linux-gnu/libffi.so.8
??
??:0:0

@@asanlab-module /opt/php/bin/php
free
??:0:0

zend_inlined_helper
/usr/src/php-src/Zend/zend_vm_execute.h:50:1
ZEND_DO_FCALL_SPEC_RETVAL_UNUSED_HANDLER
/usr/src/php-src/Zend/zend_vm_execute.h:1842:4

zif_ffi_trampoline
/usr/src/php-src/ext/ffi/ffi.c:2830:2

"""


def test_wanted_and_script():
    reports = parse(UNSYMBOLIZED)
    need = symbolize.wanted(reports)
    assert need == {"/opt/php/bin/php": {"0x1884b52", "0xc3e07d", "0x219c2ba"},
                    "/lib/x86_64-linux-gnu/libffi.so.8": {"0x6f79"}}
    s = symbolize.script(need)
    assert "--obj=/opt/php/bin/php 0x1884b52 0x219c2ba 0xc3e07d" in s


def test_parse_and_apply():
    reports = parse(UNSYMBOLIZED)
    need = symbolize.wanted(reports)
    table = symbolize.parse_output(ANSWER, need)
    # Offsets are asked and answered in sorted order: 0x1884b52, 0x219c2ba, 0xc3e07d.
    assert table[("/opt/php/bin/php", "0x1884b52")] == {"function": "free"}
    assert table[("/opt/php/bin/php", "0x219c2ba")] == {"function": "zend_inlined_helper", "line": 50, "column": 1,
                                                        "file": "/usr/src/php-src/Zend/zend_vm_execute.h"}
    assert table[("/opt/php/bin/php", "0xc3e07d")] == {"function": "zif_ffi_trampoline", "line": 2830, "column": 2,
                                                       "file": "/usr/src/php-src/ext/ffi/ffi.c"}
    assert ("/lib/x86_64-linux-gnu/libffi.so.8", "0x6f79") not in table
    changed = symbolize.apply(reports, table)
    frames = reports[0].frames
    assert changed == 3
    assert [(f.function, f.file, f.line) for f in frames] == [
        ("free", None, None),  # the sanitizer runtime has no debug information: its name only
        (None, None, None),
        ("zif_ffi_trampoline", "/usr/src/php-src/ext/ffi/ffi.c", 2830),
        ("zend_inlined_helper", "/usr/src/php-src/Zend/zend_vm_execute.h", 50),
        (None, None, None),
    ]


def test_cache_roundtrip(tmp_path):
    table = {("/opt/php/bin/php", "0x10"): {"function": "f", "file": "/a b/c.c", "line": 3, "column": None}}
    p = tmp_path / "symbols.json"
    p.write_bytes(symbolize.cache_body(table))
    assert symbolize.load_cache(p) == table
