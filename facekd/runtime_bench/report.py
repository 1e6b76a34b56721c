"""Report: merge result files into ``report.md`` and a self-contained ``report.html``.

Per device: first what to ship and what the student kept and paid against the teacher
(:mod:`runtime_bench.verdict`), then a table of every row (status ✅ ok, ❎ unavailable or
rejected, ❌ failed) and an accuracy-versus-latency scatter (PNG; embedded in the HTML as a base64
data URI): ± fold-std error bars, the teacher as a reference line, the Pareto front marked (the
rows no other row beats on both latency per image and accuracy). With ``bench.suites`` the table
has one accuracy column per benchmark set, its header saying whether flip-test was on.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from facekd.core.io import atomic_write_bytes, atomic_write_text

from .latency import LOAD_PER_CORE_LIMIT, OTHER_CORES_LIMIT, TAIL_RATIO_LIMIT
from .ceilings import ceiling_for
from .results import DeviceRuns, Row, merge_results
from .verdict import is_teacher, per_image_ms, summary_lines

STATUS_MARKS = {"ok": "✅", "unavailable": "❎", "rejected": "❎", "failed": "❌"}
GMACS_COLUMN = "GMAC/s (% of ceiling)"
IDENTITY_COLUMNS = ("TAR@1e-4 all pairs", "rank-1", "strangers matched")
COLUMNS = ("artifact", "runtime", "threads", "batch", "status", "size", "params", "MMACs", "accuracy", "AUC",
           "TAR@FAR", "flips", "worst cos", "p50 ms", "p90 ms", "p99 ms", GMACS_COLUMN, "peak RSS", "notes")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) that no other point dominates, by latency.

    ``q`` dominates ``p`` when ``q.latency <= p.latency`` and ``q.accuracy >= p.accuracy`` with at
    least one strict; identical points are all kept.
    """
    front = []
    for i, (latency, accuracy) in enumerate(points):
        dominated = any(
            other_latency <= latency and other_accuracy >= accuracy
            and (other_latency < latency or other_accuracy > accuracy)
            for j, (other_latency, other_accuracy) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


@dataclass
class ScatterPoint:
    artifact: str
    label: str
    latency_ms: float
    accuracy: float  # %
    std: float = 0.0  # fold std, %


def scatter_points(rows: Iterable[Row]) -> list[ScatterPoint]:
    """Student rows with both accuracy and latency: p50 (mean when absent) per image vs accuracy in %."""
    points = []
    for row in rows:
        if row.status != "ok" or not row.accuracy or not row.latency or is_teacher(row):
            continue
        label = f"{row.artifact} {row.runtime} t{row.threads} b{row.batch}"
        points.append(ScatterPoint(row.artifact, label, per_image_ms(row), 100.0 * row.accuracy["acc"],
                                   100.0 * row.accuracy["std"]))
    return points


def accuracy_axis(points: Sequence[ScatterPoint], teacher: float | None = None) -> tuple[float, float]:
    """A y-range that holds every error bar and the teacher line and spans at least four fold-stds
    (and 2 points), so noise between artifacts does not read as a trade-off."""
    lows = [p.accuracy - p.std for p in points] + ([teacher] if teacher is not None else [])
    highs = [p.accuracy + p.std for p in points] + ([teacher] if teacher is not None else [])
    low, high = min(lows), max(highs)
    span = max(high - low, 4 * max((p.std for p in points), default=0.0), 2.0)
    middle = (low + high) / 2
    low, high = middle - 0.6 * span, middle + 0.6 * span
    if high > 100.0:
        low, high = low - (high - 100.0), 100.0
    return max(low, 0.0), high


def scatter_png(points: Sequence[ScatterPoint], title: str, teacher: tuple[str, float] | None = None) -> bytes:
    """Accuracy (± fold std) vs latency, one colour per artifact; the Pareto front is a red step
    line and only its points are labelled; ``teacher`` (label, accuracy %) is a dashed line.
    Latency is on a log axis when it spans more than 10×."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    colours = plt.get_cmap("tab10")
    for index, artifact in enumerate(dict.fromkeys(p.artifact for p in points)):
        mine = [p for p in points if p.artifact == artifact]
        axes.errorbar([p.latency_ms for p in mine], [p.accuracy for p in mine], yerr=[p.std for p in mine],
                      fmt="o", color=colours(index % 10), ecolor=colours(index % 10), elinewidth=0.8, capsize=2,
                      alpha=0.85, label=artifact, zorder=2)
    front = pareto_front([(p.latency_ms, p.accuracy) for p in points])
    if front:
        axes.step([points[i].latency_ms for i in front], [points[i].accuracy for i in front], where="post",
                  color="tab:red", linewidth=1.2, zorder=1, label="Pareto front")
        axes.scatter([points[i].latency_ms for i in front], [points[i].accuracy for i in front], s=110,
                     facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=3)
        for i in front:
            axes.annotate(points[i].label, (points[i].latency_ms, points[i].accuracy), fontsize=7,
                          xytext=(5, -10), textcoords="offset points")
    if teacher is not None:
        axes.axhline(teacher[1], color="black", linestyle="--", linewidth=1.0, label=f"teacher ({teacher[0]}): {teacher[1]:.2f} %")
    axes.set_ylim(*accuracy_axis(points, teacher[1] if teacher else None))
    latencies = [p.latency_ms for p in points]
    if latencies and min(latencies) > 0 and max(latencies) / min(latencies) > 10:
        axes.set_xscale("log")
    axes.set_xlabel("p50 latency per image (ms, lower is better)")
    axes.set_ylabel("10-fold verification accuracy (%, ± fold std)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def teacher_accuracy(rows: Iterable[Row]) -> tuple[str, float] | None:
    """(artifact, accuracy %) of the teacher's measured row, for the plot's reference line."""
    for row in rows:
        if row.status == "ok" and row.accuracy and is_teacher(row):
            return row.artifact, 100.0 * row.accuracy["acc"]
    return None


def _number(value, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _tar_cell(accuracy: dict | None) -> str:
    if not accuracy or not accuracy.get("tar_at_far"):
        return "–"
    far, tar = min(accuracy["tar_at_far"].items(), key=lambda item: float(item[0]))
    return f"{100 * tar:.2f} % @ {far}"


def _flip_text(flip_test: bool | None) -> str:
    return "flip-test " + {True: "on", False: "off", None: "mixed"}[flip_test]


def suite_columns(rows: Iterable[Row]) -> dict[str, bool | None]:
    """Benchmark sets of the rows in first-seen order -> whether flip-test was on for them
    (None when merged runs differ)."""
    flips: dict[str, set[bool]] = {}
    for row in rows:
        for name, entry in (row.suites or {}).items():
            flips.setdefault(name, set()).add(entry["flip_test"])
    return {name: next(iter(seen)) if len(seen) == 1 else None for name, seen in flips.items()}


def has_identities(rows: Iterable[Row]) -> bool:
    return any(row.identities for row in rows)


def table_columns(suites: dict[str, bool | None], identities: bool = False) -> list[str]:
    """COLUMNS with one accuracy column per benchmark set, ``lfw (flip-test on)``, after the
    val-pairs accuracy, then (``identities``) the all-pairs columns."""
    at = COLUMNS.index("accuracy") + 1
    return [*COLUMNS[:at], *(f"{name} ({_flip_text(flip)})" for name, flip in suites.items()),
            *(IDENTITY_COLUMNS if identities else ()), *COLUMNS[at:]]


def _suite_cell(entry: dict | None, column_flip: bool | None) -> str:
    """Accuracy ± std on one set; the flip-test state too when its column mixes both."""
    if not entry:
        return "–"
    flip = f" ({_flip_text(entry['flip_test'])})" if column_flip is None else ""
    return f"{100 * entry['acc']:.2f} ± {100 * entry['std']:.2f} %{flip}"


def identity_cells(identities: dict | None) -> list[str]:
    """TAR at FAR 1e-4 over all pairs of the val identities (or why not), rank-1, and the share of
    strangers matched to someone at the manifest's operating point for the bench's gallery."""
    if not identities:
        return ["–", "–", "–"]
    tar = identities["tar_at_far"].get("1e-04")
    policy = identities.get("policy")
    return [f"{100 * tar:.2f} %" if tar is not None else "not supported",
            f"{100 * identities['rank1']:.2f} %",
            (f"{100 * policy['fpir']:.2f} % of strangers (gallery {policy['gallery_size']}, target "
             f"{100 * policy['target_fpir']:g} %)") if policy else "–"]


def _gmacs_cell(row: Row, device: dict | None) -> str:
    """Achieved GMAC/s and its share of what the host achieves for the threads used — the measured GEMM
    ceiling, and beside it the formula peak (int8 rows against the int8 figures, the others fp32)."""
    if not row.model or not row.latency:
        return "–"
    achieved = row.model["macs"] / per_image_ms(row) / 1e6
    device = device or {}
    measured = ceiling_for(device.get("measured_gmacs"), row.precision or "", row.threads or 0)
    peak = device.get("peak_gmacs")
    formula = peak["int8" if row.precision == "int8" else "fp32"] * row.threads if peak and row.threads else None
    shares = ([f"{100 * achieved / measured:.0f} % measured"] if measured else []) + (
        [f"{100 * achieved / formula:.0f} % formula"] if formula else [])
    return f"{achieved:.1f} ({', '.join(shares)})" if shares else _number(achieved, 1)


def row_cells(row: Row, suites: dict[str, bool | None] | None = None, device: dict | None = None,
              identities: bool = False) -> list[str]:
    """One table row as display strings, in :func:`table_columns` order (COLUMNS without suites
    and identities); ``device``: the result's device block (for the ceilings)."""
    accuracy, parity, latency, memory, model = row.accuracy, row.parity, row.latency or {}, row.memory or {}, row.model
    notes = [row.reason] if row.reason else []
    if row.int8_scheme:
        notes.append(f"int8: {row.int8_scheme}")
    if row.disturbed:
        notes.append(f"⚠ disturbed: {row.disturbed_reason}")
    sets = [_suite_cell((row.suites or {}).get(name), flip) for name, flip in (suites or {}).items()]
    return [
        row.artifact,
        row.runtime,
        str(row.threads) if row.threads is not None else "–",
        str(row.batch) if row.batch is not None else "–",
        f"{STATUS_MARKS[row.status]} {row.status}",
        _number(row.size_bytes / 2**20, 2, " MiB") if row.size_bytes is not None else "–",
        _number(model["params"] / 1e6, 2, " M") if model else "–",
        _number(model["macs"] / 1e6, 0) if model else "–",
        f"{100 * accuracy['acc']:.2f} ± {100 * accuracy['std']:.2f} %" if accuracy else "–",
        *sets,
        *(identity_cells(row.identities) if identities else ()),
        _number(accuracy["auc"], 4) if accuracy else "–",
        _tar_cell(accuracy),
        _number(100 * parity["flip_rate"], 2, " %") if parity and parity.get("flip_rate") is not None else "–",
        _number(parity["worst_cos"], 5) if parity else "–",
        _number(latency.get("p50")),
        _number(latency.get("p90")),
        _number(latency.get("p99")),
        _gmacs_cell(row, device),
        _number(memory.get("peak_rss_mb"), 0, " MB"),
        "; ".join(notes),
    ]


def _device_line(device: dict) -> str:
    isa = device.get("isa")
    features = f" [{' '.join(isa) if isa else 'no AVX2/AVX-512/VNNI/AMX/NEON-dotprod'}]" if isa is not None else ""
    peak = device.get("peak_gmacs")
    peak_text = (f"; estimated peak per core {peak['fp32']} GMAC/s fp32, {peak['int8']} int8 ({peak['basis']})"
                 if peak else "")
    measured = device.get("measured_gmacs")
    if measured:
        int8 = measured.get("int8") or {}
        peak_text += (f"; measured GEMM ceiling {measured['fp32']['1']} GMAC/s fp32 at 1 thread, "
                      f"{measured['fp32']['all']} at {measured.get('cores')}; int8 {int8.get('1', '–')} / "
                      f"{int8.get('all', '–')} ({measured.get('how')}{', disturbed' if measured.get('disturbed') else ''})")
    return (f"{device.get('cpu') or '?'}{features}, {device.get('cores') or '?'} cores, {device.get('os') or '?'}, "
            f"Python {device.get('python') or '–'}, load average {_number(device.get('load_before'))} before / "
            f"{_number(device.get('load_after'))} after{peak_text}")


METHOD_NOTE = (
    "Latency: warm-up by count and time, then at least N runs and T seconds; p50/p90/p99 are linear "
    "percentiles of per-run wall times of one batch. Accuracy: 10-fold verification accuracy (threshold "
    "chosen on the other folds); flips: pairs whose same/different decision at the manifest threshold "
    "differs from the torch-fp32 reference; worst cos: lowest cosine between an image's embedding and "
    "the reference's. TAR@1e-4 all pairs: true-accept rate at a false-accept rate of 1e-4 over every genuine and "
    "impostor pair of the val identities; rank-1: closed-set 1:N with each identity's first face enrolled; "
    "strangers matched: faces of people not enrolled that the manifest's operating-point rule (FPIR target for a "
    "gallery of that size) matches to someone — measured on the val identities the operating points were "
    "calibrated on. MMACs: multiply-accumulates per image (export.cost); GMAC/s: MMACs / p50 per image "
    "(in brackets: its share of what the host achieves for the threads used — the measured GEMM ceiling, and the "
    "formula peak of FMA pipes × lanes × clock — int8 rows against the int8 figures). "
    f"⚠ disturbed: other processes used more than {OTHER_CORES_LIMIT} core on average "
    f"while the runs were timed (where that cannot be measured: load average above cores × "
    f"{LOAD_PER_CORE_LIMIT}), or p99/p50 > {TAIL_RATIO_LIMIT}."
)


SUITES_NOTE = ("Benchmark-set columns (bench.suites): 10-fold accuracy ± fold std on every pair of the set, "
               "scored as `facekd eval --sets` scores it; flip-test on: each embedding averages image and mirror "
               "image. TAR@FAR, AUC and threshold per set are in the result JSON.")


PROFILE_TOP = 5  # ops named per row in the report


def profile_lines(rows: Iterable[Row]) -> list[str]:
    """One line per profiled row: its runtime's slowest ops (name [type, kernel] ms per
    inference), or why it has no profile."""
    lines = []
    for row in rows:
        profile = row.op_profile
        if not profile:
            continue
        where = f"{row.artifact} ({row.runtime}, {row.threads} thread{'s' if row.threads != 1 else ''}, batch {row.batch})"
        if "unavailable" in profile:
            lines.append(f"{where}: no per-op profile ({profile['unavailable']})")
            continue
        slowest = ", ".join(f"{op['name']} [{_op_kind(op)}] {op['ms']:.3f} ms" for op in profile["ops"][:PROFILE_TOP])
        lines.append(f"{where}: {profile['total_ms']:.2f} ms in ops per inference ({profile['runs']} profiled); "
                     f"slowest: {slowest}")
    return lines


def _op_kind(op: dict) -> str:
    """"type, kernel", the type left out where the op's name already starts with it (ExecuTorch's)."""
    return op["kernel"] if op["name"].startswith(op["type"]) else f"{op['type']}, {op['kernel']}"


def _incomplete_note(runs: DeviceRuns) -> str:
    return f"interrupted run, rows may be missing: {', '.join(runs.incomplete)} (re-run `facekd bench` to resume)"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def _markdown(devices: list[DeviceRuns], images: dict[str, str]) -> str:
    lines = ["# facekd runtime benchmark", "", METHOD_NOTE, ""]
    for runs in devices:
        lines += [f"## {runs.label}", "", _device_line(runs.device), ""]
        lines += [line for summary in summary_lines(runs.rows) for line in (summary, "")]
        if runs.incomplete:
            lines += [f"⚠ {_incomplete_note(runs)}", ""]
        suites, identities = suite_columns(runs.rows), has_identities(runs.rows)
        if suites:
            lines += [SUITES_NOTE, ""]
        columns = table_columns(suites, identities)
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in runs.rows:
            cells = row_cells(row, suites, runs.device, identities)
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
        profiles = profile_lines(runs.rows)
        if profiles:
            lines += ["Per-op profiles (each runtime's own profiler):", "", *[f"- {line}" for line in profiles], ""]
        if runs.label in images:
            lines += [f"![accuracy vs latency on {runs.label}]({images[runs.label]})", ""]
        lines += [f"Sources: {', '.join(runs.sources)}", ""]
    return "\n".join(lines)


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.notes { max-width: 28em; }
p.small { font-size: 0.85em; color: #555; }
"""


def _bold(text: str) -> str:
    """Markdown **bold** of the summary lines as HTML."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def _html(devices: list[DeviceRuns], pngs: dict[str, bytes]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>facekd runtime benchmark</title>", f"<style>{HTML_STYLE}</style></head><body>",
             "<h1>facekd runtime benchmark</h1>", f'<p class="small">{html.escape(METHOD_NOTE)}</p>']
    for runs in devices:
        parts += [f"<h2>{html.escape(runs.label)}</h2>", f"<p>{html.escape(_device_line(runs.device))}</p>"]
        parts += [f"<p>{_bold(html.escape(line))}</p>" for line in summary_lines(runs.rows)]
        if runs.incomplete:
            parts.append(f"<p>⚠ {html.escape(_incomplete_note(runs))}</p>")
        suites, identities = suite_columns(runs.rows), has_identities(runs.rows)
        if suites:
            parts.append(f'<p class="small">{html.escape(SUITES_NOTE)}</p>')
        columns = table_columns(suites, identities)
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
        for row in runs.rows:
            cells = row_cells(row, suites, runs.device, identities)
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1])
                         + f'<td class="notes">{html.escape(cells[-1])}</td></tr>')
        parts.append("</table>")
        profiles = profile_lines(runs.rows)
        if profiles:
            parts.append("<p>Per-op profiles (each runtime's own profiler):</p><ul>"
                         + "".join(f"<li>{html.escape(line)}</li>" for line in profiles) + "</ul>")
        if runs.label in pngs:
            data = base64.b64encode(pngs[runs.label]).decode("ascii")
            parts.append(f'<img alt="accuracy vs latency on {html.escape(runs.label)}" src="data:image/png;base64,{data}">')
        parts.append(f'<p class="small">Sources: {html.escape(", ".join(runs.sources))}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(result_paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.md`` (+ one scatter PNG per device) and a self-contained ``report.html``."""
    devices = merge_results(result_paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, bytes] = {}
    images: dict[str, str] = {}
    for runs in devices:
        points = scatter_points(runs.rows)
        if points:
            pngs[runs.label] = scatter_png(points, f"Accuracy vs latency — {runs.label}", teacher_accuracy(runs.rows))
            images[runs.label] = f"scatter-{_slug(runs.label)}.png"
            atomic_write_bytes(out_dir / images[runs.label], pngs[runs.label])
    md_path = atomic_write_text(out_dir / "report.md", _markdown(devices, images))
    html_path = atomic_write_text(out_dir / "report.html", _html(devices, pngs))
    return md_path, html_path
