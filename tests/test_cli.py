import pytest

from medseg import cli


def test_help_lists_commands(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    assert "usage: medseg <command>" in out and "train" in out


def test_unknown_command_exits_2_with_usage_verbatim(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["frobnicate"])
    assert err.value.code == 2
    text = " ".join(capsys.readouterr().err.split())
    assert "frobnicate" in text
    # the usage text has literal brackets; printed through rich markup unescaped, they vanish
    assert "usage: medseg <command> [options] [key=value ...]" in text, text
