"""`facekd demo`: teacher cache -> train -> export -> bench -> report, resumable.

Every stage writes into a folder named by a digest of its config and inputs, and a finished
stage is recognised by its final file (written last, atomically): re-running the demo reuses
finished stages and resumes a killed training run.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from facekd.core.io import atomic_write_json, sha256_file, sha256_text

from .config import RunConfig, config_digest, save_config, to_dict
from .bench_stage import bench_export
from .stages import ensure_teacher_cache, ensure_view_cache, export_student, train_student
from facekd.training.config import READING_ONLY_DATA_KEYS
from facekd.training.trainer import open_training_data

log = logging.getLogger(__name__)
STAGES = ("teacher cache", "train", "export", "bench", "report")


def _digest(*parts) -> str:
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:12]


def _announce(index: int, detail: str) -> float:
    log.info("[%d/%d] %s: %s", index + 1, len(STAGES), STAGES[index], detail)
    return time.perf_counter()


def run_demo(cfg: RunConfig, out: Path, config_path: str | None = None, progress: bool = True) -> dict:
    """Run (or resume) the whole chain in `out`; returns the summary also written to demo.json."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    train_dir = _train_stage(cfg, out, progress, timings)
    student = train_dir / "student.pt"
    export_dir = _export_stage(cfg, out, student, progress, timings)
    results = _bench_stage(cfg, out, export_dir, progress, timings)
    started = time.perf_counter()
    reference = _bench_reference(cfg, out, progress)
    if reference is not None:
        results.append(reference[1])
        timings["reference"] = time.perf_counter() - started

    from facekd.runtime_bench.report import write_report

    started = _announce(4, str(out / "report"))
    md, html = write_report(results, out / "report")
    timings["report"] = time.perf_counter() - started
    _link(out / "export", export_dir)
    _link(out / "student.pt", student)
    val = json.loads((train_dir / "metrics.json").read_text()).get("val")
    summary = {"config": config_path, "config_digest": config_digest(cfg), "train_dir": str(train_dir),
               "student": str(student), "export_dir": str(export_dir),
               "reference_export_dir": str(reference[0]) if reference is not None else None,
               "results": [str(p) for p in results],
               "report_html": str(html), "report_md": str(md), "val": val, "stage_seconds": timings}
    atomic_write_json(out / "demo.json", summary)
    accuracy = f"student val accuracy {100 * val['accuracy']:.2f}% | " if val else ""
    print(f"\nfacekd demo done: {accuracy}report: {html}")
    return summary


def _train_stage(cfg: RunConfig, out: Path, progress: bool, timings: dict) -> Path:
    """Teacher cache(s), then the training run in a folder named by its config and caches (resumed when killed)."""
    started = _announce(0, cfg.teacher.path)
    folder = open_training_data(cfg)
    cache = ensure_teacher_cache(cfg, folder, progress)
    views = ensure_view_cache(cfg, folder, progress)
    timings["teacher cache"] = time.perf_counter() - started

    training = {k: to_dict(getattr(cfg, k)) for k in ("data", "teacher", "student", "loss", "optim", "train")}
    for key in READING_ONLY_DATA_KEYS:  # the same run whether its faces are preloaded or streamed
        training["data"].pop(key)
    train_dir = out / f"train-{_digest(training, cache.key, *([views.key] if views else []))}"
    started = _announce(1, str(train_dir))
    if (train_dir / "student.pt").exists():
        log.info("reusing finished training run %s", train_dir)
    else:
        resume = (train_dir / "checkpoints" / "last.pt").exists()
        train_student(cfg, train_dir, resume=resume, progress=progress)
    timings["train"] = time.perf_counter() - started
    return train_dir


def _export_stage(cfg: RunConfig, out: Path, student: Path, progress: bool, timings: dict) -> Path:
    export_dir = out / f"export-{_digest(sha256_file(student), to_dict(cfg.export))}"
    started = _announce(2, str(export_dir))
    if cfg.train.int8_aware_epochs == 0:
        log.info("int8 artifacts are post-training (dynamic range or int8 weights only): the student had no int8-aware "
                 "epochs (--set train.int8_aware_epochs=1 makes them full-integer, about 1.5x faster than fp32, for a "
                 "few more minutes of training; see docs/measurements.md, INT8)")
    if (export_dir / "export_summary.json").exists():
        log.info("reusing finished export %s", export_dir)
    else:
        export_student(cfg, student, export_dir, progress=progress)
    timings["export"] = time.perf_counter() - started
    return export_dir


def _bench_stage(cfg: RunConfig, out: Path, export_dir: Path, progress: bool, timings: dict) -> list[Path]:
    bench_dir = out / f"bench-{_digest(sha256_file(export_dir / 'export_summary.json'), to_dict(cfg.bench))}"
    done = bench_dir / "results.json"
    started = _announce(3, str(bench_dir))
    if done.exists():
        log.info("reusing finished benchmark %s", bench_dir)
        results = [Path(p) for p in json.loads(done.read_text())]
    else:
        results = bench_export(cfg, export_dir, bench_dir / "result.json", progress=progress)
        atomic_write_json(done, [str(p) for p in results])
    timings["bench"] = time.perf_counter() - started
    return results


def reference_checkpoint(path: str) -> Path | None:
    """The demo's reference student: ``path`` as given, else relative to the repository."""
    if not path:
        return None
    for candidate in (Path(path), Path(__file__).resolve().parents[1] / path):
        if candidate.is_file():
            return candidate
    log.warning("demo.reference_student %s not found: the report shows the new student only", path)
    return None


def _bench_reference(cfg: RunConfig, out: Path, progress: bool) -> tuple[Path, Path] | None:
    """Export + bench the reference student (few formats, one thread): (export folder, result file
    whose rows are named ``reference <artifact>``)."""
    from facekd.runtime_bench.results import with_artifact_prefix

    checkpoint = reference_checkpoint(cfg.demo.reference_student)
    if checkpoint is None:
        return None
    ref_cfg = replace(cfg, export=replace(cfg.export, formats=list(cfg.demo.reference_formats),
                                          precisions=dict(cfg.demo.reference_precisions), teacher=False),
                      bench=replace(cfg.bench, threads=list(cfg.demo.reference_threads), targets=[{"kind": "local"}]))
    export_dir = out / f"reference-export-{_digest(sha256_file(checkpoint), to_dict(ref_cfg.export))}"
    log.info("reference student %s -> %s", checkpoint, export_dir)
    if not (export_dir / "export_summary.json").exists():
        export_student(ref_cfg, checkpoint, export_dir, progress=progress)
    bench_dir = out / f"reference-bench-{_digest(sha256_file(export_dir / 'export_summary.json'), to_dict(ref_cfg.bench))}"
    renamed = bench_dir / "result-reference.json"
    if not renamed.exists():
        (result,) = bench_export(ref_cfg, export_dir, bench_dir / "result.json", progress=progress)
        with_artifact_prefix(result, "reference ", renamed)
    return export_dir, renamed


def _link(link: Path, target: Path) -> None:
    """Stable names (out/export, out/student.pt) for the latest content-addressed outputs."""
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve().relative_to(link.parent.resolve()))
