"""The command line people type: no prefix matching, one line per mistake, what to use."""

from __future__ import annotations

import pytest

from unbroken.cli.main import build_parser, main
from unbroken.cli.parser import parse


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err  # one line, never a usage dump
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize(("argv", "line"), [
    (["serve", "--master", "app:app"],
     "unbroken: error: unknown option --master: unbroken always runs a master: remove --master"),
    (["serve", "--reload", "app:app"],
     "unbroken: error: unknown option --reload: unbroken does not watch the code: reload "
     "with `unbroken reload`, SIGHUP, or --reload-on-touch FILE"),
    (["serve", "--wrokers", "3", "app:app"],
     "unbroken: error: unknown option --wrokers: did you mean --workers?"),
    (["serve", "--wrokers=3", "app:app"],
     "unbroken: error: unknown option --wrokers: did you mean --workers?"),
    (["status", "--nmae", "shop"],
     "unbroken: error: unknown option --nmae: did you mean --name?"),
    (["serve", "--bogus", "app:app"],
     "unbroken: error: unknown option --bogus: see unbroken serve --help"),
    (["serve", "a:b", "c:d"],
     "unbroken: error: unexpected argument 'c:d' (see unbroken serve --help)"),
    (["serve", "-w", "0", "app:app"],
     "unbroken: error: argument -w/--workers: must be at least 1, got 0"),
    (["serve", "--graceful-timeout", "soon", "app:app"],
     "unbroken: error: argument --graceful-timeout: 'soon' is not a number"),
    (["serve", "--backlog", "lots", "app:app"],
     "unbroken: error: argument --backlog: 'lots' is not a whole number"),
    (["serve", "--proxy-protocol=maybe", "app:app"],
     "unbroken: error: argument --proxy-protocol: 'maybe' must be on or off"),
    (["stauts"], "unbroken: error: unknown command 'stauts': did you mean status?"),
    (["frobnicate"], "unbroken: error: unknown command 'frobnicate': the commands are serve, "
     "check, reload, status, history, stop, scale, drill, deploy"),
    ([], "unbroken: error: give a command (serve, check, reload, status, history, stop, "
     "scale, drill, deploy); see unbroken --help"),
])
def test_a_mistake_is_one_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                               line: str) -> None:
    assert _error(capsys, *argv) == line


def test_no_prefix_matching() -> None:
    # `--master-f PATH` would have been --master-fifo; now it is unknown.
    parser = build_parser()
    with pytest.raises(SystemExit):
        parse(parser, ["serve", "--master-f", "fifo", "app:app"])
    arguments = parse(parser, ["serve", "--master-fifo", "fifo", "app:app"])
    assert arguments.master_fifo == "fifo"


@pytest.mark.parametrize(("argv", "switch", "app"), [
    (["serve", "--proxy-protocol", "app:app"], True, "app:app"),
    (["serve", "--proxy-protocol", "off", "app:app"], False, "app:app"),
    (["serve", "--proxy-protocol=on", "app:app"], True, "app:app"),
    (["serve", "app:app", "--proxy-protocol"], True, "app:app"),
    (["check", "--proxy-protocol", "app:app", "-w", "2"], True, "app:app"),
])
def test_a_switch_does_not_swallow_the_app(argv: list[str], switch: bool, app: str) -> None:
    from unbroken.cli.main import _give_back_the_app

    parser = build_parser()
    arguments = parse(parser, argv)
    _give_back_the_app(parser, arguments)
    assert (arguments.proxy_protocol, arguments.app) == (switch, app)


def test_short_flags_still_group() -> None:
    arguments = parse(build_parser(), ["serve", "-w3", "app:app"])
    assert arguments.workers == 3
