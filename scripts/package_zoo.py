"""Package a finished training run as a zoo entry: student.pt, config.yaml, metrics.json,
SHA256SUMS and a model card (README.md) written from the run's own files.

    .venv/bin/python scripts/package_zoo.py RUN_DIR zoo/NAME --retrain "facekd train --config ..."
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facekd.training.checkpoint import load_student  # noqa: E402
from facekd.core.io import atomic_write_text, sha256_file  # noqa: E402

MAX_BYTES = 8 * 1024 * 1024
FILES = ("student.pt", "config.yaml", "metrics.json")


def recipe_text(config: dict) -> str:
    """The distillation recipe of a run's config.yaml, in words."""
    teacher, loss = config.get("teacher", {}), config.get("loss", {})
    views = int(teacher.get("views") or 0)
    seen = (f"{views} consistent augmented views of each image (teacher.views)" if views
            else "each image and its mirror")
    text = f"EC-KD hardness-aware feature consistency on cached teacher embeddings of {seen}"
    if float(loss.get("hint") or 0) > 0:
        text += ", plus feature-map hints: the stage-end maps regress the teacher's own (loss.hint)"
    return text


def model_card(name: str, state: dict, metrics: dict, config: dict, retrain: str, params: int) -> str:
    val = metrics["val"]
    history = ", ".join(f"epoch {h['epoch']}: {100 * h['val']['accuracy']:.2f} %" for h in metrics["history"] if h.get("val"))
    arch = state["arch"]
    source = arch.get("source", {})
    tar = val["tar_at_far"]
    return f"""# {name}

A face-verification student distilled by facekd from the SFace teacher (OpenCV Zoo, 128-d,
99.37 % ± 0.50 on `splits/val_pairs_3000.txt` measured here).

- **Architecture**: `{arch['name']}` — the teacher's own MobileNet-style network read from its
  ONNX file, its 6.4 M-weight Gemm head replaced by a GDC head (rank-{source.get('head_rank', 1)} fit of the Gemm), channels
  pruned to keep ratio {source.get('keep_ratio')} ({source.get('importance')} importance,
  torch-pruning); {params / 1e6:.2f} M parameters, 128-d embedding.
- **Input**: `{json.dumps(state['preprocess'])}` — aligned 112×112 RGB faces (ArcFace 5-point template).
- **Data**: 3,538 identities / 7,907 images of LFW `peopleDevTrain` (`splits/train_identities.txt`).
  Validation identities (`splits/val_identities.txt`) were never trained on.
- **Recipe**: `config.yaml` ({recipe_text(config)}, SGD + cosine schedule); {metrics['epochs']} epochs, {metrics['steps']} steps,
  median step {metrics.get('step_ms_median') or 0:.0f} ms on a 2-core CPU.
- **Accuracy** (10-fold, `splits/val_pairs_3000.txt`): **{100 * val['accuracy']:.2f} % ± {100 * val['accuracy_std']:.2f}**,
  AUC {val['auc']:.4f}, TAR@FAR=1e-2 {100 * tar.get('1e-02', float('nan')):.1f} %, TAR@FAR=1e-3
  {100 * tar.get('1e-03', float('nan')):.1f} %; threshold {val['threshold']:.4f}. By epoch: {history}.
- **Retrain**: `{retrain}` (add `--resume` to continue a killed run).
- **Export / bench**: `facekd export zoo/{name}/student.pt --out DIR`, then `facekd bench DIR --out result.json`.

**What it is not for**: identification at scale, or any population unlike LFW's (mostly frontal
press photos of public figures, skewed in age, gender and skin tone); LFW-level accuracy says
little about low-light, profile or surveillance faces. Check on your own faces before use; it
inherits the teacher's biases and licence terms (SFace: Apache-2.0; LFW: research benchmark).
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--retrain", required=True, help="the one command that retrains this student")
    args = parser.parse_args(argv)
    model, _, state = load_student(args.run_dir / "student.pt")
    size = (args.run_dir / "student.pt").stat().st_size
    if size > MAX_BYTES:
        print(f"{args.run_dir / 'student.pt'} is {size} bytes, over the zoo's {MAX_BYTES}", file=sys.stderr)
        return 2
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    args.dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(args.run_dir / name, args.dest / name)
    params = sum(p.numel() for p in model.parameters())
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    atomic_write_text(args.dest / "README.md", model_card(args.dest.name, state, metrics, config, args.retrain, params))
    sums = "".join(f"{sha256_file(args.dest / name)}  {name}\n" for name in FILES)
    atomic_write_text(args.dest / "SHA256SUMS", sums)
    print(sums, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
