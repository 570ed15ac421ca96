"""Tokenizer and parser: quoting, paths, separators, and every parse error with its column."""

from __future__ import annotations

import pytest

from rds_sim.device import Device
from rds_sim.routeros.errors import ParseError
from rds_sim.routeros.menus import build_root
from rds_sim.routeros.parser import parse
from rds_sim.routeros.tokens import Kind, tokenize

from .conftest import Run

ROOT = build_root()


@pytest.mark.parametrize(
    ("src", "value"),
    [
        (r'"plain"', "plain"),
        (r'"a \"quoted\" word"', 'a "quoted" word'),
        (r'"back\\slash"', "back\\slash"),
        (r'"tab\there"', "tab\there"),
        (r'"new\nline"', "new\nline"),
        (r'"under\_score"', "under score"),
        (r'"dollar\$x"', "dollar$x"),
        (r'"hex\41"', "hexA"),
        (r'"x;/system reboot"', "x;/system reboot"),
        (r'"semi;colon[find]"', "semi;colon[find]"),
    ],
)
def test_string_escapes(src: str, value: str) -> None:
    toks = tokenize(src)
    assert toks[0].kind is Kind.STRING
    assert toks[0].text == value


@pytest.mark.parametrize(
    ("line", "path", "verb", "args"),
    [
        ("/disk print", "/disk", "print", {}),
        ("/disk/print", "/disk", "print", {}),
        ("disk print detail", "/disk", "print", {"detail": ""}),
        ("/system resource print", "/system/resource", "print", {}),
        ("/system/resource/print", "/system/resource", "print", {}),
        ("/system identity set name=x", "/system/identity", "set", {"name": "x"}),
        ("/disk pri det", "/disk", "print", {"detail": ""}),  # unique abbreviations
        ('/disk set "pvc 1" comment=""', "/disk", "set", {"numbers": "pvc 1", "comment": ""}),
        ("/disk set pvc-1 comment=", "/disk", "set", {"numbers": "pvc-1", "comment": ""}),
        ('/disk set x comment=a"b c"d', "/disk", "set", {"numbers": "x", "comment": "ab cd"}),
        ("/disk set x comment=a=b", "/disk", "set", {"numbers": "x", "comment": "a=b"}),
        (
            '/disk add slot="x;/system reboot"',
            "/disk",
            "add",
            {"slot": "x;/system reboot"},
        ),
        (
            "/disk remove [find slot=x]",
            "/disk",
            "remove",
            {"numbers": "[find slot=x]"},
        ),
        (
            '/disk print where slot~"^pvc-" and !disabled',
            "/disk",
            "print",
            {"where": 'slot~"^pvc-" and !disabled'},
        ),
    ],
)
def test_command_info(device: Device, line: str, path: str, verb: str, args: dict[str, str]):
    result = device.execute(line)
    assert result.commands, result.output
    info = result.commands[0]
    assert (info.path, info.verb, info.args) == (path, verb, args)
    assert info.text == line


def test_injection_in_quotes_stays_one_value(run: Run, device: Device) -> None:
    result = run(
        '/disk add type=file file-path=storage-pool/a.img file-size=1M slot="x;/system reboot"'
    )
    assert len(result.commands) == 1
    assert [d.slot for d in device.disks()][-1] == "x;/system reboot"


def test_unquoted_semicolon_separates_commands(run: Run) -> None:
    result = run("/disk print count-only;/system identity print")
    assert [c.path for c in result.commands] == ["/disk", "/system/identity"]
    assert result.output == "1\r\n  name: rds\r\n\r\n"


def test_newlines_separate_commands_and_bare_path_sets_menu(run: Run) -> None:
    result = run("/disk\nprint count-only\n\n/system identity print")
    assert result.output == "1\r\n  name: rds\r\n\r\n"
    assert result.commands[0].text == "print count-only"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/foo", "bad command name foo (line 1 column 2)"),
        ("/disk prnt", "bad command name prnt (line 1 column 7)"),
        ("/disk/prnt", "bad command name prnt (line 1 column 7)"),
        ("/system resource print detail", "expected end of command (line 1 column 24)"),
        ("/system bogus print", "bad command name bogus (line 1 column 9)"),
        ("/disk print foo", "expected end of command (line 1 column 13)"),
        ("/disk add foo=bar", "expected end of command (line 1 column 11)"),
        ("/disk add type=file bogus=1 slot=a", "expected end of command (line 1 column 21)"),
        ("/disk print where foo=1", "expected end of command (line 1 column 19)"),
        ('/disk print where slot="a', "syntax error (line 1 column 24)"),
        ("/disk print where", "syntax error (line 1 column 18)"),
        ("/disk print where (slot=a", "syntax error (line 1 column 26)"),
        ("/disk print where slot=a)", "syntax error (line 1 column 25)"),
        ("/disk set x comment=$foo", "syntax error (line 1 column 21)"),
        ('/disk set x comment="a$foo"', "syntax error (line 1 column 23)"),
        (r'/disk set x comment="bad\q"', "syntax error (line 1 column 25)"),
        ("/disk print\n/disk prnt", "bad command name prnt (line 2 column 7)"),
        ("/disk print; /disk add = x", "syntax error (line 1 column 24)"),
        ("/disk/print/foo", "expected end of command (line 1 column 12)"),
    ],
)
def test_parse_errors(device: Device, line: str, message: str) -> None:
    result = device.execute(line)
    assert result.output == message + "\r\n"
    assert result.exit_status == 0  # RouterOS 7: parse errors exit 0
    assert result.commands == []


def test_parse_error_runs_nothing(run: Run, device: Device) -> None:
    run(
        "/disk add type=file file-path=storage-pool/a.img file-size=1M slot=a; /disk prnt",
        expect=0,
    )
    assert [d.slot for d in device.disks()] == ["storage-pool"]


def test_v6_mode_parse_errors_exit_1(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dev = Device(tmp_path, parse_error_exit_status=1)
    assert dev.execute("/disk prnt").exit_status == 1


def test_parse_error_carries_line_and_column() -> None:
    with pytest.raises(ParseError) as err:
        parse("/disk print\n  /disk frob", ROOT)
    assert (err.value.line, err.value.column) == (2, 9)


def test_abbreviations_can_be_switched_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rds_sim.routeros.behaviour import Behaviour

    dev = Device(tmp_path, behaviour=Behaviour(abbreviations=False))
    assert dev.execute("/disk pri").output == "bad command name pri (line 1 column 7)\r\n"
