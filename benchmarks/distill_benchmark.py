"""Distillation benchmark (not a test): does the KD suite close the teacher–student gap?

Trains the same MobileFaceNet twice on the same data and schedule —
(a) margin loss only, (b) margin + the KD suite of configs/distill_benchmark.yaml — then prints
the val accuracy of the teacher, (a) and (b), the share of the teacher−(a) gap that (b) recovers,
and the median step time of (b) over (a). Re-running reuses or resumes finished runs.

    .venv/bin/python benchmarks/distill_benchmark.py --out runs/distill_benchmark [--set train.epochs=4]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facekd.cli import run_config
from facekd.stages import ensure_teacher_cache, train_student
from facekd.training.config import load_val_pairs
from facekd.training.trainer import Trainer, open_training_data
from facekd.training.checkpoint import load_checkpoint
from facekd.core.verification import evaluate
from facekd.core.io import atomic_write_json
from facekd.training.teacher import load_teacher

KD_TERMS = ("fcd", "hard_fcd", "exclusivity", "rad", "logit_kd", "sp", "rkd")


def interleaved_step_ms(plain_cfg, kd_cfg, work: Path, steps: int = 12) -> dict:
    """Median step time of both configs, their steps alternated in one process so that a load
    change on a shared machine hits both alike (the first two steps of each are warm-up)."""
    folder = open_training_data(kd_cfg)
    cache = ensure_teacher_cache(kd_cfg, folder, progress=False)
    trainers = {name: Trainer(cfg, work / name, cache, folder, progress=False)
                for name, cfg in (("a", plain_cfg), ("b", kd_cfg))}
    batches = list(iter(trainers["b"].sampler))
    times: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(steps + 2):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer._step(batches[i % len(batches)])
            if i >= 2:
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: float(np.median(values)) for name, values in times.items()}


def train_or_reuse(cfg, run_dir: Path) -> dict:
    student = run_dir / "student.pt"
    if student.exists():
        return json.loads((run_dir / "metrics.json").read_text())
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    return train_student(cfg, run_dir, resume=resume).metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "distill_benchmark.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--data")
    parser.add_argument("--teacher")
    parser.add_argument("--out", default="runs/distill_benchmark")
    args = parser.parse_args(argv)
    out = Path(args.out)

    kd_cfg = run_config(args)
    plain_cfg = run_config(args)
    for term in KD_TERMS:
        setattr(plain_cfg.loss, term, 0.0)

    pairs = load_val_pairs(kd_cfg)
    teacher_file = out / "teacher_val.json"
    if teacher_file.exists():
        teacher_val = json.loads(teacher_file.read_text())
    else:
        teacher = load_teacher(kd_cfg.teacher.path, kd_cfg.teacher.preprocess)
        teacher_val = evaluate(teacher.embed, pairs, progress=True).to_dict()
        atomic_write_json(teacher_file, teacher_val)

    plain = train_or_reuse(plain_cfg, out / "a_margin_only")
    kd = train_or_reuse(kd_cfg, out / "b_kd_suite")
    with tempfile.TemporaryDirectory() as work:
        step_ms = interleaved_step_ms(plain_cfg, kd_cfg, Path(work))
    acc_t, acc_a, acc_b = teacher_val["accuracy"], plain["val"]["accuracy"], kd["val"]["accuracy"]
    gap = acc_t - acc_a
    summary = {
        "pairs": str(kd_cfg.data.val_pairs), "num_pairs": int(len(pairs.same)),
        "teacher": teacher_val, "a_margin_only": plain["val"], "b_kd_suite": kd["val"],
        "gap_recovered": (acc_b - acc_a) / gap if gap > 0 else None,
        "step_ms_interleaved": step_ms,
        "step_time_ratio": step_ms["b"] / step_ms["a"],
        "step_ms_during_training": {"a": plain["step_ms_median"], "b": kd["step_ms_median"]},
        "kd_terms": {t: getattr(kd_cfg.loss, t) for t in KD_TERMS if getattr(kd_cfg.loss, t) > 0},
        "epochs": kd_cfg.train.epochs, "width": kd_cfg.student.width,
    }
    atomic_write_json(out / "summary.json", summary)
    print(f"val pairs: {kd_cfg.data.val_pairs} ({len(pairs.same)} pairs)")
    for name, val in (("teacher", teacher_val), ("(a) margin only", plain["val"]), ("(b) KD suite", kd["val"])):
        print(f"{name:18s} accuracy {100 * val['accuracy']:.2f}% ± {100 * val['accuracy_std']:.2f}  AUC {val['auc']:.4f}")
    if summary["gap_recovered"] is not None:
        print(f"(b) recovers {100 * summary['gap_recovered']:.1f}% of the teacher−(a) gap (goal ≥ 60%)")
    print(f"step time (b)/(a): {summary['step_time_ratio']:.3f} "
          f"({step_ms['b']:.0f} ms / {step_ms['a']:.0f} ms, steps interleaved; goal ≤ 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
