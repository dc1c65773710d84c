"""--help reads like a tool's: values named as docker's and pip's help names them, no Python type
names, every option described, one registry option on every command that takes a registry."""

import pytest

import asanlab.cli  # noqa: F401  (registers the commands)
from asanlab.cli.common import command
from asanlab.cli.entry import main

GROUP = command()
COMMANDS = sorted(GROUP.commands)


def help_of(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setattr("sys.argv", ["asanlab", name, "--help"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_no_python_type_names(name, capsys, monkeypatch):
    text = help_of(name, capsys, monkeypatch)
    for bad in ("<", "list[", "{", "Path]", "<str>", "<int>", "<float>"):
        assert bad not in text, f"asanlab {name} --help shows {bad!r}:\n{text}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_described_and_named(name):
    for p in GROUP.commands[name].params:
        if type(p).__name__ != "TyperOption" or p.hidden:
            continue
        assert p.help, f"asanlab {name} {p.opts[0]} has no help"
        if not p.is_flag:
            assert p.metavar and p.metavar == p.metavar.strip(), f"asanlab {name} {p.opts[0]} has no metavar"


def test_one_name_and_one_variable_for_the_registry_prefix():
    takers = {}
    for name, cmd in GROUP.commands.items():
        for p in cmd.params:
            if type(p).__name__ == "TyperOption" and not p.hidden and "PREFIX" in (p.metavar or ""):
                takers[name] = (tuple(p.opts), p.envvar)
    assert set(takers) == {"build", "push", "pull", "run", "soak"}, takers
    assert set(takers.values()) == {(("--registry",), "ASANLAB_REGISTRY")}, takers
