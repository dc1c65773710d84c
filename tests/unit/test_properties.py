"""Arbitrary input to every parser and to the recipe loader: asanlab's own error, or a result, and
never another exception (which would exit 70 as a bug in asanlab)."""

from hypothesis import given, settings, strategies as st

from asanlab.soak import memory, resources
from asanlab.reports import crash, php_stack, sanitizers as reports, valgrind
from asanlab.image import recipe
from asanlab.errors import AsanlabError

# Text with the characters and words the parsers look for, so the search goes past the first line.
WORDS = st.sampled_from(["report ", "frame ", "\t", "request ", "coroutine ", "end", "heap ", "site ", "census 1\n", "holder global\t$x\t1\t2\n", "\n",
                         "origin 1 2 0\n", "site 0\n", "block 0x10 0\n", "Objects leaked above:\n", "0x10 (8 bytes)\n",
                         "Direct leak of 8 byte(s) in 1 object(s) allocated from:\n",
                         "==1==ERROR: AddressSanitizer: ", "    #0 0x1 in f /a.c:1\n", "@process 1\n", "fd 3 ",
                         "socket:[12]", "@net tcp\n", "0100007F:1F90 ", "@cgroup\n", "name: x\n", "php:\n",
                         "  version: ", '"8.2.1"', "&a ", "*a", "[", "]", "{", "}", ":", "-", "٣", "9" * 30,
                         "<error>", "<kind>Leak_DefinitelyLost</kind>", "</error>", "<?xml version='1.0'?>",
                         "crash 1\n", "signal 11 SIGSEGV\n", "code ", "backtrace\n", "gdb\n", "asanlab-gdb bt\n",
                         "asanlab-gdb zbacktrace\n", "#1  0x1 in f (a=(b)) at /a.c:1 from /b.so\n", "<signal handler called>",
                         "/a.so(f+0x1)[0x2]\n", "[0x1] f() /a.php:2\n"])
TEXT = st.one_of(st.text(), st.lists(st.one_of(WORDS, st.text(max_size=5)), max_size=60).map("".join))


@settings(max_examples=300)
@given(TEXT)
def test_parsers_take_any_text(text):
    php_stack.parse(text)
    php_stack.parse_heap(text)
    php_stack.parse_census(text)
    php_stack.attach_origins(reports.parse(text), {1: php_stack.parse_origins(text)})
    memory.parse_snapshot(text)
    memory.parse_answers(text)
    memory.parse_profiles(text)
    resources.parse_net({"tcp": text, "unix": text})
    reports.parse(text)
    valgrind.parse_xml(text)
    crash.parse(text)


@settings(max_examples=300)
@given(TEXT)
def test_the_recipe_loader_takes_any_text(text):
    try:
        recipe.parse(text)
    except AsanlabError:
        pass


@given(st.binary(max_size=400))
def test_the_recipe_loader_takes_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("r") / "r.yml"
    path.write_bytes(data)
    try:
        recipe.load(path)
    except AsanlabError:
        pass
