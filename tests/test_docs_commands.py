"""Every shell command in README.md and docs/*.md matches the code (issue 16.5).

Commands come from the fenced bash blocks. What is cheap runs here (`make -n <target>`); the rest is parsed
by the program's own parser instead of run: a stage's or script's `parse_args`, DVC's and Ray's command-line
parsers, and `dvc exp run -S key=value` overrides applied to params.yaml and validated by the params schema.
Programs that need a cluster, Docker or credentials (git, docker, kubectl, helm, aws) are only checked for
what can be checked offline.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
PLACEHOLDER = re.compile(r"<([a-z][\w-]*)>")  # `<job-id>`, `https://<token>@<git-host>/...`
OPERATORS = {";", "&&", "||", "|", "&"}
SHELL_BUILTINS = {"export", "source", "cd"}
NOT_CHECKED = {"git", "docker", "kubectl", "aws", "apt-get"}  # need a remote, an engine, credentials or root


@dataclass(frozen=True)
class Command:
    doc: str
    argv: list[str]
    stdin: str = ""  # a heredoc body

    def __str__(self) -> str:
        return f"{self.doc}: {shlex.join(self.argv)}"


def logical_lines(block: str) -> Iterator[tuple[str, str]]:
    """Each command line of a bash block (continuations joined, quotes spanning lines kept together),
    with the body of its heredoc, if any."""
    lines = iter(block.replace("\\\n", " ").splitlines())
    pending = ""
    for line in lines:
        pending += line + "\n"
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote is still open
            continue
        body = ""
        if heredoc := HEREDOC.search(pending):
            body = "".join(f"{ln}\n" for ln in iter(lines.__next__, heredoc[1]))
            pending = HEREDOC.sub("", pending)
        yield pending, body
        pending = ""


def split_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one line: operators split, `$(...)` substitutions as commands of their own."""
    line = PLACEHOLDER.sub(r"\1", line)
    for inner in SUBSTITUTION.findall(line):
        yield from split_commands(inner)
    lexer = shlex.shlex(SUBSTITUTION.sub("", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    argv: list[str] = []
    for token in lexer:
        if token in OPERATORS:
            yield from [argv] if argv else []
            argv = []
        else:
            argv.append(token)
    yield from [argv] if argv else []


def documented_commands(doc: Path) -> list[Command]:
    commands = []
    for block in FENCE.findall(doc.read_text()):
        for line, body in logical_lines(block):
            commands += [Command(doc.name, argv, body) for argv in split_commands(line)]
    return commands


ALL_COMMANDS = [command for doc in DOCS for command in documented_commands(doc)]


def _without_assignments(argv: list[str]) -> list[str]:
    while argv and "=" in argv[0] and argv[0].split("=", 1)[0].isidentifier():
        argv = argv[1:]
    return argv


def _after_double_dash(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _parse_exits_cleanly(parse, args: list[str], errors: tuple[type[Exception], ...] = ()) -> str | None:
    """None if `parse(args)` accepts them; else argparse's error line (or the parser's own `errors`)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parse(args)
    except SystemExit as exit_:
        if exit_.code:
            return stderr.getvalue().strip().splitlines()[-1]
    except errors as error:  # DVC logs its message instead of printing it
        return f"{type(error).__name__}: {error}"
    return None


def check_python(command: Command, argv: list[str]) -> None:
    if argv[1:2] == ["-"]:  # a script on stdin (heredoc): it must at least compile
        compile(command.stdin, f"{command.doc} heredoc", "exec")
        return
    if argv[1:2] == ["-m"]:
        module, args = importlib.import_module(argv[2]), argv[3:]
    else:
        path = ROOT / argv[1]
        assert path.is_file(), f"{command}: no such script {argv[1]}"
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        args = argv[2:]
    parse_args = getattr(module, "parse_args", None)
    if parse_args is None:
        assert not args, f"{command}: {module.__name__} takes no arguments"
        return
    error = _parse_exits_cleanly(parse_args, args)
    assert error is None, f"{command}: {error}"
    _, inner = _after_double_dash(args)
    if inner:
        check(Command(command.doc, inner))


def overridden_params(command: Command, overrides: list[str]) -> dict:
    """params.yaml with the ``-S`` overrides applied by DVC itself, which refuses a plain ``key=value`` on a
    key the file lacks (``++key=value`` sets one it leaves at its default)."""
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        shutil.copy(ROOT / "params.yaml", params)
        try:
            apply_overrides(params, overrides)
        except Exception as error:  # DVC's InvalidArgumentError; the Hydra cause says why
            pytest.fail(f"{command}: {error.__cause__ or error}")
        return yaml.safe_load(params.read_text())


def check_dvc(command: Command, argv: list[str]) -> None:
    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    parsed = []
    parse = lambda args: parsed.append(get_main_parser().parse_args(args))  # noqa: E731
    error = _parse_exits_cleanly(parse, argv[1:], errors=(DvcParserError,))
    assert error is None, f"{command}: {error}"
    overrides = getattr(parsed[0], "set_param", None) or []
    overridden_params(command, [re.sub(r"\$\w+", "x", o) for o in overrides])  # every key, as DVC takes it
    # shell variables ("$ANYTIME_SHARDS") are the user's values: only their keys can be checked
    concrete = [o for o in overrides if "$" not in o]
    from pipelines.config import ParamsError, validate_params

    keys = {o.lstrip("+~").partition("=")[0] for o in overrides}
    try:
        params = validate_params(overridden_params(command, concrete), f"{command}")
        for key in keys:
            section = params
            for part in key.split("."):
                section = getattr(section, part)
    except (ParamsError, AttributeError) as error:
        pytest.fail(f"{command}: {error}")


def check_ray(command: Command, argv: list[str]) -> None:
    from ray.scripts.scripts import cli

    own, inner = _after_double_dash(argv[1:])
    try:
        context = cli.make_context("ray", own + (["--", *inner] if inner else []))
        group = cli
        while isinstance(group, click.Group):
            # click 8.2+ deprecates protected_args, but 8.x still keeps the subcommand there
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                remaining = [*context.protected_args, *context.args]
            name, group, args = group.resolve_command(context, remaining)
            context = group.make_context(name, args, parent=context)
    except click.ClickException as error:
        pytest.fail(f"{command}: {error.format_message()}")
    if inner:
        check(Command(command.doc, inner))


def check_bash(command: Command, argv: list[str]) -> None:
    script = argv[argv.index("-c") + 1]
    for line, body in logical_lines(script):
        for inner in split_commands(line):
            check(Command(command.doc, inner, body))


def check_make(command: Command, argv: list[str]) -> None:
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), *argv[1:]], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{command}: {result.stderr}"


def check_helm(command: Command, argv: list[str]) -> None:
    if argv[1] == "install":
        repo = argv[3].split("/")[0]
        added = [c.argv for c in ALL_COMMANDS if c.argv[:3] == ["helm", "repo", "add"]]
        assert any(a[3] == repo for a in added), f"{command}: no `helm repo add {repo} ...` before it"


def check_script(command: Command, argv: list[str]) -> None:
    path = ROOT / argv[0]
    assert path.is_file() and os.access(path, os.X_OK), f"{command}: {argv[0]} is not an executable script"


CHECKERS = {
    "python": check_python,
    "dvc": check_dvc,
    "ray": check_ray,
    "bash": check_bash,
    "make": check_make,
    "helm": check_helm,
}


def check(command: Command) -> None:
    argv = _without_assignments(command.argv)
    if not argv or argv[0] in SHELL_BUILTINS | NOT_CHECKED:
        return
    if "/" in argv[0]:
        check_script(command, argv)
        return
    assert argv[0] in CHECKERS, f"{command}: no check for {argv[0]}; add one or list it in NOT_CHECKED"
    CHECKERS[argv[0]](command, argv)


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_documented_command_matches_the_code(command):
    check(command)


def test_every_doc_has_its_commands_found():
    found = {command.doc for command in ALL_COMMANDS}
    assert {"README.md", "cluster.md"} <= found
    programs = {_without_assignments(c.argv)[0] for c in ALL_COMMANDS if _without_assignments(c.argv)}
    assert {"make", "dvc", "python", "ray", "helm"} <= programs


def test_shell_variables_set_in_a_doc_are_used_there():
    """A bare `NAME=value` line (not exported, no command) is only for later lines of the same doc."""
    for doc in DOCS:
        text = doc.read_text()
        for command in documented_commands(doc):
            if len(command.argv) == 1 and "=" in command.argv[0]:
                name = command.argv[0].split("=", 1)[0]
                assert f"${name}" in text or f"${{{name}}}" in text, f"{command}: ${name} is never used"


@pytest.mark.parametrize(
    "line",
    [
        "dvc exp run -S train.no_such_key=1",
        "dvc exp run -S train.epochs=many",
        "dvc exp run --no-such-flag",
        "python -m pipelines.train --no-such-flag",
        "python -m pipelines.fetch --force",
        "ray job submit --no-such-flag -- python -m pipelines.train",
        "ray job submit -- python -m pipelines.train --no-such-flag",
        "bash -c 'dvc exp run -S tune.scaling.no_such_key=1'",
        "make no-such-target",
        "helm install kuberay-operator elsewhere/kuberay-operator",
        "frobnicate --now",
    ],
)
def test_a_wrong_command_is_caught(line):
    (argv,) = split_commands(line)
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check(Command("example.md", argv))
