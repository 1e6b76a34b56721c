"""Latency of exported artifacts of any status (rejected ones too: what a gate turned down still has
a speed), interleaved in one process so that every artifact meets the same machine state.

Each artifact runs one aligned face at batch 1 on ``--threads`` threads through its format's own
runner; after ``--warmup`` rounds, ``--rounds`` rounds each time every artifact once, in turn.

    python benchmarks/artifact_latency.py EXPORT/tflite-fp32 EXPORT/rejected/executorch-int8 [...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from facekd.core.preprocess import PreprocessSpec
from facekd.export.formats import FORMATS
from facekd.export.manifest import Manifest, verify_artifact


def open_artifact(folder: Path, threads: int):
    """(runner loaded on the artifact, its manifest)."""
    manifest_path = folder / "manifest.json"
    manifest = Manifest.load(manifest_path)
    runner = FORMATS[manifest.format].runner()
    runner.load(verify_artifact(manifest_path), threads)
    return runner, manifest


def interleaved_p50(folders: list[Path], threads: int, warmup: int, rounds: int) -> dict[str, dict]:
    face = np.random.default_rng(0).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8)
    opened = {folder: open_artifact(folder, threads) for folder in folders}
    inputs = {folder: PreprocessSpec.from_dict(manifest.preprocess).apply(face) for folder, (_, manifest) in opened.items()}
    times: dict[Path, list[float]] = {folder: [] for folder in folders}
    for round_number in range(warmup + rounds):
        for folder, (runner, _) in opened.items():
            started = time.perf_counter()
            runner.run(inputs[folder])
            if round_number >= warmup:
                times[folder].append(1000.0 * (time.perf_counter() - started))
    return {str(folder): {"status": manifest.status, "p50_ms": float(np.median(times[folder])),
                          "int8": manifest.int8_scheme(), "size_bytes": manifest.size_bytes}
            for folder, (_, manifest) in opened.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", type=Path, help="artifact folders (with manifest.json)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = interleaved_p50(args.artifacts, args.threads, args.warmup, args.rounds)
    for folder, row in result.items():
        print(f"{row['p50_ms']:7.2f} ms  {row['status']:9s} {folder}  {row['int8'] or ''}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
