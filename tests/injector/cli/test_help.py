"""``meshinject --help``, ``--version`` and every command's help: complete, and plain text."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Iterator

import pytest

from injector import cli
from tests.support.cli import meshinject


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_exits_0_and_lists_every_command_with_its_summary(
    capsys: pytest.CaptureFixture[str]
) -> None:
    for flag in ("--help", "-h"):
        code, out, _ = run(capsys, flag)
        assert code == 0
        for name, (_, summary) in cli.SUBCOMMANDS.items():
            assert any(line.split(None, 1) == [name, summary] for line in out.splitlines()), name


def test_version_prints_the_package_version_and_exits_0(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--version")
    assert (code, out) == (0, f"meshinject {importlib.metadata.version('meshinject')}\n")


def test_no_command_or_an_unknown_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, out) == (2, "") and "inject" in err
    code, _, err = run(capsys, "injcet")
    assert code == 2 and "unknown command 'injcet'" in err


def test_the_installed_command_answers_help_and_version_as_a_user_runs_it() -> None:
    assert meshinject("--help").returncode == 0
    done = meshinject("--version")
    assert (done.returncode, done.stdout.startswith("meshinject ")) == (0, True)


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The top parser, every command's parser and every one below it (``sandbox up``...)."""
    yield "meshinject", cli.top_parser()
    for name in cli.SUBCOMMANDS:
        [wrapper] = _children(cli.command_parser(name))  # the real one, under a bare top
        yield from _walk(name, wrapper[1])


def _children(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    return [(name, child) for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            for name, child in action.choices.items()]


def _walk(path: str, parser: argparse.ArgumentParser
          ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for name, child in _children(parser):
        yield from _walk(f"{path} {name}", child)


def test_every_command_has_a_description_and_every_option_a_help_in_plain_text() -> None:
    seen = []
    for path, parser in parsers():
        seen.append(path)
        assert parser.description, f"{path}: no description"
        assert "`" not in parser.description, f"{path}: markup in {parser.description!r}"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help and "`" not in choice.help, f"{path} {choice.dest}"
                continue
            assert action.help, f"{path} {action.option_strings or action.dest}: no help"
            assert "`" not in action.help, f"{path} {action.dest}: markup in {action.help!r}"
    assert {"demo", "sandbox up", "sandbox logs", "uninject", "serve"} <= set(seen)
