"""What a command made: the table printed last and the exit code that goes with it.

Exit codes: 0 everything requested was made and passed; 2 the command could not run (bad input,
missing file, bad config: one-line error); 3 it ran, but a requested artifact or benchmark row
failed or was rejected (with ``--strict`` also when one is unavailable on this host);
130 interrupted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

EXIT_OK = 0
EXIT_BUG = 1  # an exception that is not a FacekdError: a bug, shown with its traceback
EXIT_ERROR = 2
EXIT_NOT_MADE = 3
EXIT_INTERRUPTED = 130

FAILED = ("failed", "rejected")
NOT_HERE = ("unavailable", "validated-structure-only")  # failures only under --strict


@dataclass(frozen=True)
class Line:
    """One thing a command was asked to make, and how it ended."""

    stage: str  # "export" | "bench" | "reference export" | ...
    name: str  # e.g. "onnx-int8" or "onnx-int8 threads=1 batch=1"
    status: str
    reason: str = ""

    def is_failure(self, strict: bool) -> bool:
        return self.status in FAILED or (strict and self.status in NOT_HERE)


def export_lines(records: Iterable, stage: str = "export") -> list[Line]:
    """Lines of export records (``ExportRecord`` objects or their dicts)."""
    lines = []
    for record in records:
        data = record if isinstance(record, dict) else record.to_dict()
        lines.append(Line(stage, f"{data['format']}-{data['precision']}", data["status"], data.get("reason") or ""))
    return lines


def export_summary_lines(export_dir: Path, stage: str = "export") -> list[Line]:
    return export_lines(json.loads((Path(export_dir) / "export_summary.json").read_text()), stage)


def bench_lines(result_paths: Iterable[Path], stage: str = "bench") -> list[Line]:
    """One line per benchmark row (artifact × runtime × threads × batch) of the result files."""
    from facekd.runtime_bench.results import load_result

    lines = []
    for path in result_paths:
        result = load_result(path)
        for row in result.rows:
            where = "" if result.target == "local" else f" @{result.target}"
            detail = "".join(f" {key}={value}" for key, value in (("threads", row.threads), ("batch", row.batch))
                             if value is not None)
            lines.append(Line(stage, f"{row.artifact}{detail}{where}", row.status, row.reason or ""))
    return lines


def exit_code(lines: Iterable[Line], strict: bool = False) -> int:
    return EXIT_NOT_MADE if any(line.is_failure(strict) for line in lines) else EXIT_OK


def table(lines: list[Line], strict: bool = False) -> str:
    """The summary printed last: one row per line, failures marked, then the verdict."""
    if not lines:
        return "nothing was requested"
    width = max(len(line.name) for line in lines)
    stage_width = max(len(line.stage) for line in lines)
    rows = []
    for line in lines:
        mark = "✗" if line.is_failure(strict) else ("·" if line.status in NOT_HERE else "✓")
        reason = f"  {line.reason}" if line.reason else ""
        rows.append(f"{mark} {line.stage:<{stage_width}}  {line.name:<{width}}  {line.status}{reason}")
    failures = sum(line.is_failure(strict) for line in lines)
    verdict = (f"{failures} of {len(lines)} failed" + (" (strict: unavailable counts)" if strict else "")
               if failures else f"all {len(lines)} made" + ("" if strict else " (· = not runnable on this host)"))
    return "\n".join(rows + [verdict])
