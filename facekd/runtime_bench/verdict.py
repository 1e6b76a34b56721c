"""What to ship on a device, and what the student kept and paid against the teacher.

Recommendation: among the device's ``ok`` student rows with accuracy and latency (``ok`` means the
artifact passed its parity gate at export and its file matched its manifest), the candidates are
those whose accuracy is within one fold-std of the best student's (``acc >= best.acc - best.std``);
the recommended row is the candidate with the lowest p50 latency per image; the runner-up of each
runtime (format) is its fastest other candidate.

Headline: the teacher's row against the recommended artifact at the same threads and batch
(else the teacher's fastest row): accuracy delta (points), × fewer parameters, × smaller file,
× faster (p50 per image, same run).
"""
from __future__ import annotations

from dataclasses import dataclass

from .results import Row


def per_image_ms(row: Row) -> float:
    latency = row.latency or {}
    per_batch = latency["p50"] if latency.get("p50") is not None else latency["mean"]
    return per_batch / max(row.batch or 1, 1)


def is_teacher(row: Row) -> bool:
    return (row.model or {}).get("role") == "teacher"


def _measured(row: Row) -> bool:
    return row.status == "ok" and bool(row.accuracy) and bool(row.latency)


@dataclass(frozen=True)
class Recommendation:
    best: Row  # what to ship
    runners_up: list[Row]  # fastest other candidate of each other runtime/format
    best_accuracy: Row  # the most accurate student row (sets the bar)

    @property
    def bar(self) -> float:
        return self.best_accuracy.accuracy["acc"] - self.best_accuracy.accuracy["std"]


def recommend(rows: list[Row]) -> Recommendation | None:
    students = [row for row in rows if _measured(row) and not is_teacher(row)]
    if not students:
        return None
    most_accurate = max(students, key=lambda row: row.accuracy["acc"])
    bar = most_accurate.accuracy["acc"] - most_accurate.accuracy["std"]
    candidates = sorted((row for row in students if row.accuracy["acc"] >= bar), key=per_image_ms)
    best = candidates[0]
    runners_up, seen = [], {best.format}
    for row in candidates[1:]:
        if row.format not in seen:
            seen.add(row.format)
            runners_up.append(row)
    return Recommendation(best, runners_up, most_accurate)


@dataclass(frozen=True)
class Headline:
    teacher: Row
    student: Row
    accuracy_delta_points: float
    fewer_params: float | None
    smaller_file: float | None
    faster: float


def headline(rows: list[Row], recommendation: Recommendation | None) -> Headline | None:
    teachers = [row for row in rows if _measured(row) and is_teacher(row)]
    if not teachers or recommendation is None:
        return None
    student = recommendation.best
    same = [row for row in teachers if (row.threads, row.batch) == (student.threads, student.batch)]
    teacher = min(same or teachers, key=per_image_ms)
    params = [(r.model or {}).get("params") for r in (teacher, student)]
    return Headline(
        teacher=teacher, student=student,
        accuracy_delta_points=100 * (student.accuracy["acc"] - teacher.accuracy["acc"]),
        fewer_params=params[0] / params[1] if all(params) else None,
        smaller_file=teacher.size_bytes / student.size_bytes if teacher.size_bytes and student.size_bytes else None,
        faster=per_image_ms(teacher) / per_image_ms(student),
    )


def _config(row: Row) -> str:
    return f"{row.artifact} ({row.runtime}, {row.threads} thread{'s' if (row.threads or 1) > 1 else ''}, batch {row.batch})"


def summary_lines(rows: list[Row]) -> list[str]:
    """The first lines of a device's section: what to ship, runners-up, student vs teacher."""
    recommendation = recommend(rows)
    if recommendation is None:
        return ["No student artifact was measured with accuracy and latency on this device: nothing to recommend."]
    best = recommendation.best
    lines = [f"**Ship {best.artifact}** on this device: {_config(best)}, {100 * best.accuracy['acc']:.2f} ± "
             f"{100 * best.accuracy['std']:.2f} %, {per_image_ms(best):.2f} ms per image — the fastest artifact within "
             f"one fold-std of the most accurate student ({recommendation.best_accuracy.artifact}, "
             f"{100 * recommendation.best_accuracy.accuracy['acc']:.2f} %; bar {100 * recommendation.bar:.2f} %) "
             f"whose parity passed."]
    if recommendation.runners_up:
        lines.append("Runner-up per runtime: " + "; ".join(
            f"{row.format}: {_config(row)}, {per_image_ms(row):.2f} ms" for row in recommendation.runners_up) + ".")
    head = headline(rows, recommendation)
    if head is None:
        lines.append("The teacher was not measured on this device (export with `export.teacher: true` and an ONNX "
                     "teacher to see what the student kept and paid).")
    else:
        parts = [f"accuracy {head.accuracy_delta_points:+.2f} points ({100 * head.student.accuracy['acc']:.2f} % vs "
                 f"{100 * head.teacher.accuracy['acc']:.2f} %)"]
        if head.fewer_params:
            parts.append(f"{head.fewer_params:.1f}× fewer parameters")
        if head.smaller_file:
            parts.append(f"{head.smaller_file:.1f}× smaller file")
        parts.append(f"{head.faster:.1f}× faster ({per_image_ms(head.student):.2f} vs {per_image_ms(head.teacher):.2f} "
                     f"ms per image, {head.teacher.threads} thread{'s' if (head.teacher.threads or 1) > 1 else ''}, "
                     f"same run)")
        lines.append(f"Student vs teacher ({head.teacher.artifact}): " + ", ".join(parts) + ".")
    return lines + users_lines(best, head.teacher if head else None)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def users_lines(student: Row, teacher: Row | None) -> list[str]:
    """Where users live, for the recommended row (and the teacher): TAR at FAR 1e-4 over all pairs
    of the val identities, every benchmark set (e.g. CFP-FP: profile faces), and the strangers the
    shipped operating point lets match in a gallery."""
    parts = []
    mine, theirs = student.identities or {}, (teacher.identities if teacher else None) or {}
    if mine:
        tar = mine["tar_at_far"].get("1e-04")
        parts.append(f"TAR@FAR=1e-4 over all pairs of {mine['identities']} val identities {_percent(tar)}"
                     + (f" (teacher {_percent(theirs['tar_at_far'].get('1e-04'))})" if theirs else ""))
    for name, entry in (student.suites or {}).items():
        other = ((teacher.suites if teacher else None) or {}).get(name)
        parts.append(f"{name} {_percent(entry['acc'])}" + (f" (teacher {_percent(other['acc'])})" if other else ""))
    lines = [f"Where users live ({student.artifact}): " + "; ".join(parts) + "."] if parts else []
    policy = mine.get("policy")
    if policy:
        lines.append(f"Strangers matched to someone in a gallery of {policy['gallery_size']} at the shipped operating "
                     f"point (target FPIR {100 * policy['target_fpir']:g} %): {_percent(policy['fpir'])}; enrolled "
                     f"people missed: {_percent(policy['fnir'])}.")
    return lines
