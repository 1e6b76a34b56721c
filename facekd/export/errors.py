"""Errors a user can cause while exporting; each message is one line that says what to do."""
from __future__ import annotations
from facekd.core.errors import FacekdError


class ExportError(FacekdError, ValueError):
    """A bad export request (unknown format, unsupported precision, missing package, bad images)."""


class FormatUnavailable(ExportError):
    """A converter or runtime that cannot run on this host (package missing, wrong OS, no GPU)."""
