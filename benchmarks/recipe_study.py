"""Recipe study (not a test): which lever buys student accuracy, at which CPU budget?

Each arm of benchmarks/recipe_study.yaml is one `facekd train` run (a config plus overrides),
trained in its own run folder under --out (finished runs are reused, killed ones resumed with
--resume). For every finished arm the study prints and writes to summary.json: val accuracy on
the configured pairs (10-fold, ± std), AUC, TAR@FAR=1e-2, parameters, MACs (torch-pruning's
counter), CPU-minutes of the training process (user + system), and the student's single-thread
latency as a ratio to the teacher's ONNX latency, both measured in this process, interleaved.
An arm with a `plain` partner also gets gap recovered = (KD − plain) / (teacher − plain).

    .venv/bin/python benchmarks/recipe_study.py --out runs/study [--only NAME ...] [--collect]

Select recipes on the val pairs only: the training identities never include val identities.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facekd.cli import run_config  # noqa: E402
from facekd.training.checkpoint import load_student  # noqa: E402
from facekd.core.verification import evaluate  # noqa: E402
from facekd.core.io import atomic_write_json  # noqa: E402
from facekd.training.teacher import load_teacher  # noqa: E402
from facekd.training.config import load_val_pairs  # noqa: E402


def train_arm(arm: dict, out: Path, common: list[str]) -> float:
    """Train (or resume) one arm in a child process; returns the CPU-minutes it used now."""
    run_dir = out / arm["name"]
    if (run_dir / "student.pt").exists():
        return 0.0
    cmd = [sys.executable, "-m", "facekd.cli", "--quiet", "train", "--config", str(REPO / arm["config"]),
           "--out", str(run_dir), *sum((["--set", s] for s in [*common, *arm.get("set", [])]), [])]
    if (run_dir / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=REPO, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / 60.0


def onnx_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved_latency_ms(sessions: dict[str, ort.InferenceSession], rounds: int = 60) -> dict[str, float]:
    """Median batch-1 latency of each session, their runs alternated so load changes hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    feeds = {name: {s.get_inputs()[0].name: np.random.default_rng(0).uniform(0, 1, (1, 3, 112, 112)).astype(np.float32)}
             for name, s in sessions.items()}
    for round_number in range(rounds + 5):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feeds[name])
            if round_number >= 5:
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: float(np.median(values)) for name, values in times.items()}


def onnx_parameters(path: Path) -> int:
    """Number of weights stored in an ONNX file's initializers."""
    import onnx

    return int(sum(np.prod(tensor.dims, dtype=np.int64) for tensor in onnx.load(str(path)).graph.initializer))


def describe(student_path: Path, work: Path) -> tuple[dict, Path]:
    """Parameters and MACs of a student, and an fp32 ONNX file of it for the latency run."""
    import torch_pruning as tp

    model, _, _ = load_student(student_path)
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, 112, 112))
    onnx_path = work / f"{student_path.parent.name}.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 112, 112),), str(onnx_path), input_names=["input"],
                      output_names=["embedding"], dynamo=False)
    return {"params": int(params), "macs": int(macs)}, onnx_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default=str(REPO / "benchmarks" / "recipe_study.yaml"))
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--only", nargs="*", help="train only these arms (others are collected if finished)")
    parser.add_argument("--collect", action="store_true", help="train nothing; tabulate finished arms")
    parser.add_argument("--data")
    parser.add_argument("--teacher")
    args = parser.parse_args(argv)
    study = yaml.safe_load(Path(args.study).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = run_config(argparse.Namespace(config=None, overrides=list(study.get("set", [])), data=args.data,
                                        teacher=args.teacher))
    if study.get("val_pairs_file"):  # a pairs file beside the default one (e.g. val_pairs_3000.txt)
        cfg.data.val_pairs = str(Path(cfg.data.val_pairs).with_name(study["val_pairs_file"]))
    common = [*study.get("set", []), f"data.val_pairs={cfg.data.val_pairs}"]
    cpu_file = out / "cpu_minutes.json"
    cpu_minutes = json.loads(cpu_file.read_text()) if cpu_file.exists() else {}

    for arm in study["arms"]:
        if args.collect or (args.only and arm["name"] not in args.only):
            continue
        cpu_minutes[arm["name"]] = cpu_minutes.get(arm["name"], 0.0) + train_arm(arm, out, common)
        atomic_write_json(cpu_file, cpu_minutes)

    pairs = load_val_pairs(cfg)
    teacher_file = out / "teacher_val.json"
    if teacher_file.exists():
        teacher_val = json.loads(teacher_file.read_text())
    else:
        teacher_val = evaluate(load_teacher(cfg.teacher.path, cfg.teacher.preprocess).embed, pairs).to_dict()
        atomic_write_json(teacher_file, teacher_val)

    finished = [arm for arm in study["arms"] if (out / arm["name"] / "student.pt").exists()]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        sessions = {"teacher": onnx_session(Path(cfg.teacher.path))}
        for arm in finished:
            facts, onnx_path = describe(out / arm["name"] / "student.pt", Path(work))
            metrics = json.loads((out / arm["name"] / "metrics.json").read_text())
            rows[arm["name"]] = {**facts, "val": metrics["val"], "epochs": metrics["epochs"],
                                 "cpu_minutes": cpu_minutes.get(arm["name"]), "budget": arm.get("budget"),
                                 "step_ms_median": metrics.get("step_ms_median")}
            sessions[arm["name"]] = onnx_session(onnx_path)
        latency = interleaved_latency_ms(sessions)
    teacher_params = onnx_parameters(Path(cfg.teacher.path))
    for name, row in rows.items():
        row["latency_ms"] = latency[name]
        row["latency_vs_teacher"] = latency[name] / latency["teacher"]
    for arm in finished:
        plain = arm.get("plain")
        if plain in rows:
            kd, base, top = rows[arm["name"]]["val"]["accuracy"], rows[plain]["val"]["accuracy"], teacher_val["accuracy"]
            rows[arm["name"]]["gap_recovered"] = (kd - base) / (top - base) if top > base else None
    summary = {"pairs": str(cfg.data.val_pairs), "teacher": {"val": teacher_val, "latency_ms": latency["teacher"],
               "params": teacher_params}, "arms": rows, "cpu": _cpu_isa(), "cores": os.cpu_count()}
    atomic_write_json(out / "summary.json", summary)

    print(f"val pairs {cfg.data.val_pairs}; teacher {100 * teacher_val['accuracy']:.2f}% ± "
          f"{100 * teacher_val['accuracy_std']:.2f}, {latency['teacher']:.1f} ms (1 thread); CPU {summary['cpu']}")
    print("| arm | budget | epochs | accuracy | AUC | TAR@FAR=1e-2 | params | MACs | CPU-min | latency × teacher | gap recovered |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        val = row["val"]
        tar = val["tar_at_far"].get("0.01", val["tar_at_far"].get("1e-02"))
        gap = row.get("gap_recovered")
        cpu = row["cpu_minutes"]
        print(f"| {name} | {row['budget']} | {row['epochs']} | {100 * val['accuracy']:.2f} ± {100 * val['accuracy_std']:.2f} "
              f"| {val['auc']:.4f} | {'–' if tar is None else f'{100 * tar:.1f}'} | {row['params'] / 1e6:.2f} M "
              f"| {row['macs'] / 1e6:.0f} M | {'–' if not cpu else f'{cpu:.0f}'} | {row['latency_vs_teacher']:.3f} "
              f"| {'–' if gap is None else f'{100 * gap:.1f} %'} |")
    return 0


def _cpu_isa() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model} ({', '.join(isa)})"


if __name__ == "__main__":
    sys.exit(main())
