"""The README and docs/ stay true: the reference is generated from the code, every `facekd` command they show
is accepted by the CLI as written, every link resolves, the README stays a front door."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from facekd.cli import build_parser
from facekd.reference import render

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shown_commands(page: Path) -> list[list[str]]:
    """`facekd …` commands the page shows: every line of its shell blocks (continuations joined, env prefixes
    dropped), and every inline `facekd …` that is a whole command (arguments, no usage syntax like [--flag])."""
    text = page.read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    spans = [shlex.split(span) for span in re.findall(r"(?<!`)`(facekd [^`]+)`", text)
             if not re.search(r"[\[\]|…]|COMMAND", span.replace("=[", "").replace("]'", ""))]
    commands = [words[1:] for words in spans if len(words) > 2]  # `facekd bench` alone names a command
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0], posix=True) if line.strip() else []
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value prefixes
            if words[:1] == ["facekd"]:
                commands.append(words[1:])
            elif "facekd.cli" in words:
                commands.append(words[words.index("facekd.cli") + 1:])
    return commands


def test_the_reference_is_generated_from_the_code():
    assert (REPO / "docs/reference.md").read_text() == render(), "run: python -m facekd.reference > docs/reference.md"


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    assert [line for line in lines if line.startswith("### ")][:4] == [
        "### 1. Run the demo", "### 2. Distil your own teacher on your own faces",
        "### 3. Put it on a phone (Android)", "### 4. Put it in a browser"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_is_accepted_as_written(page, capsys):
    parser = build_parser()
    for argv in shown_commands(page):
        try:
            parser.parse_args(argv)
        except SystemExit as stop:
            if stop.code != 0:  # --help / --version exit 0
                pytest.fail(f"{page.name}: `facekd {' '.join(argv)}` is refused: {capsys.readouterr().err.strip()}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
        if not target.startswith(("http://", "https://", "mailto:")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
