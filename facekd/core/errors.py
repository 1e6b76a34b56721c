"""The one base of every error a user can cause, and how any error is said in one line.

A :class:`FacekdError` means the input, the config, the files or the host are not what the command
needs; its message says what to do. The CLI prints it as one line and exits 2. Anything else that
escapes is a bug in facekd and keeps its traceback.
"""
from __future__ import annotations


class FacekdError(Exception):
    """An error a user can cause; the message names the input and what to do about it."""


class InputError(FacekdError, ValueError):
    """A value a user gave (a setting, a count, a shape of their data) that cannot work."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (cut to ``limit`` characters), for records and table cells."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:limit] if text else ''}".strip().rstrip(":")
