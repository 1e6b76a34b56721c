"""docs/reference.md, generated from the code: every command with its flags, every config key with its
type, default and comment. ``python -m facekd.reference > docs/reference.md``; a test keeps it current."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing

from .config import RunConfig, to_dict

HEADER = """# CLI and config reference

Generated from the code by `python -m facekd.reference > docs/reference.md` (a test fails when it is stale).
Every config key below can be set in a YAML file (`--config`) or on the command line (`--set key=value`).
"""


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    lines = ["## Commands", ""]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    for name, command in subparsers.choices.items():
        lines += [f"### `facekd {name}`", "", helps.get(name) or "", "", "```", command.format_usage().strip(), "```", ""]
        for action in command._actions:
            if action.help in (None, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
                continue
            flags = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.dest}`"
            lines.append(f"- {flags}: {' '.join(action.help.split())}")
        lines.append("")
    return lines


def _field_comments(cls) -> dict[str, str]:
    """The comment written beside (or just above) each field in the dataclass's source."""
    comments, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = re.match(r"(\w+)\s*:[^#]*?(?:#\s*(.*))?$", stripped)
        if match and not stripped.startswith(("def ", "class ", "return", "@")):
            comments[match.group(1)] = " ".join([*above, match.group(2) or ""]).strip()
        above = []
    return comments


def _config_rows(instance, prefix: str = "") -> list[str]:
    """The table of one config section (its defaults as ``instance`` holds them), then its subsections."""
    cls = type(instance)
    hints, comments, rows, nested = typing.get_type_hints(cls), {}, [], []
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_field_comments(klass))
    for item in dataclasses.fields(cls):
        value = getattr(instance, item.name)
        if dataclasses.is_dataclass(value):
            nested.append((item.name, value))
            continue
        type_name = getattr(hints[item.name], "__name__", str(hints[item.name])).replace("typing.", "")
        cells = [f"`{prefix}{item.name}`", type_name, f"`{to_dict(value)}`", comments.get(item.name, "")]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines = []
    if rows:
        doc = inspect.getdoc(cls) or ""
        summary = "" if doc.startswith(f"{cls.__name__}(") else doc.split("\n\n")[0].replace("\n", " ")
        lines += [f"### `{prefix.rstrip('.') or 'top level'}`", "", summary, "",
                  "| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for name, value in nested:
        lines += _config_rows(value, f"{prefix}{name}.")
    return lines


def render() -> str:
    from .cli import build_parser

    return "\n".join([HEADER, *_commands(build_parser()), "## Config keys", "", *_config_rows(RunConfig())]).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
