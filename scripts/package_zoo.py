"""Package a finished training run as a zoo entry: student.pt, config.yaml, metrics.json,
SHA256SUMS and a model card (README.md) written from the run's own files.

    .venv/bin/python scripts/package_zoo.py RUN_DIR zoo/NAME --retrain "facekd train --config ..." \
        [--eval EVAL.json --eval-command "facekd eval ..."] [--bench RESULT.json --bench-command "..."]

``--eval`` takes what ``facekd eval --json`` wrote (all pairs of the val identities, CFP sets),
``--bench`` a ``facekd bench`` result of the student's export beside the teacher.
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
from facekd.config import load_config, save_config  # noqa: E402
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
    extra = int(config.get("data", {}).get("unlabelled_per_batch") or 0)
    if extra:
        text += f", plus {extra} unlabelled in-domain faces per batch (data.unlabelled)"
    if float(loss.get("rad") or 0) > 0:
        text += (f", plus CoupleFace relation-aware distillation on the {loss.get('rad_top_k', 32)} hardest "
                 "teacher negatives of each face (loss.rad)")
    return text


def _percent(value) -> str:
    return f"{100 * value:.2f} %" if value is not None else "–"


def eval_text(evaluation: dict, command: str) -> str:
    """The card's lines on the measures where users live, from `facekd eval --json`."""
    lines = []
    for found in evaluation.get("identities", {}).values():
        tar = ", ".join(f"{far} **{_percent(value)}**" for far, value in sorted(found["tar_at_far"].items()))
        open_set = found.get("open_set") or {}
        lines.append(
            f"all pairs of {found['identities']} val identities ({found['faces']:,} faces, {found['genuine_pairs']:,} genuine / "
            f"{found['impostor_pairs']:,} impostor pairs): TAR at FAR {tar}; EER {_percent(found['eer'])}; 1:N rank-1 "
            f"{_percent(found['rank1'])} (everyone enrolled); FNIR {_percent(open_set.get('fnir'))} at FPIR "
            f"{_percent(open_set.get('fpir'))} with {open_set.get('gallery_size')} people enrolled")
    for name, measured in evaluation.get("sets", {}).items():
        lines.append(f"`{name}` {_percent(measured['accuracy'])} ± {_percent(measured['accuracy_std'])} "
                     f"({measured['num_pairs']:,} pairs, 10-fold)")
    return (f"- **Where users live** (`facekd eval`, no flip-test): " + "; ".join(lines)
            + f". Reproduce: `{command}`.\n")


def bench_text(result: dict, command: str) -> str:
    """The card's lines on the student's export benched beside the teacher."""
    rows = [row for row in result["rows"] if row.get("status") == "ok" and row.get("threads") == 1
            and row.get("precision") == "fp32" and row.get("latency")]
    def fastest(role):
        mine = [row for row in rows if (row.get("model") or {}).get("role") == role]
        return min(mine, key=lambda row: row["latency"]["p50"]) if mine else None
    student, teacher = fastest("student"), fastest("teacher")
    device = result["device"]
    text = (f"- **Bench** ({device.get('cpu')} [{' '.join(device.get('isa') or [])}], {device.get('cores')} cores, "
            f"{result.get('created', '')[:10]}; 1 thread, batch 1)")
    if student and teacher:
        ratio = teacher["latency"]["p50"] / student["latency"]["p50"]
        params = teacher["model"]["params"] / student["model"]["params"]
        text += (f": fastest fp32 {student['artifact']} {student['latency']['p50']:.2f} ms vs the teacher's "
                 f"{teacher['artifact']} {teacher['latency']['p50']:.2f} ms (**{ratio:.1f}×** faster, {params:.1f}× "
                 "fewer parameters)")
    policy = ((student or {}).get("identities") or {}).get("policy")
    if policy:
        text += (f"; at the shipped operating point strangers matched to someone in a gallery of "
                 f"{policy['gallery_size']}: {_percent(policy['fpir'])} (target {100 * policy['target_fpir']:g} %), "
                 f"enrolled people missed {_percent(policy['fnir'])}")
    return text + f". Reproduce: `{command}`.\n"


def model_card(name: str, state: dict, metrics: dict, config: dict, retrain: str, params: int,
               measured: str = "") -> str:
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
{measured}- **Retrain**: `{retrain}` (add `--resume` to continue a killed run).
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
    parser.add_argument("--eval", type=Path, help="facekd eval --json of the student")
    parser.add_argument("--eval-command", default="", help="the command that wrote --eval")
    parser.add_argument("--bench", type=Path, help="facekd bench result of its export beside the teacher")
    parser.add_argument("--bench-command", default="", help="the commands that wrote --bench")
    args = parser.parse_args(argv)
    model, _, state = load_student(args.run_dir / "student.pt")
    size = (args.run_dir / "student.pt").stat().st_size
    if size > MAX_BYTES:
        print(f"{args.run_dir / 'student.pt'} is {size} bytes, over the zoo's {MAX_BYTES}", file=sys.stderr)
        return 2
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    measured = eval_text(json.loads(args.eval.read_text()), args.eval_command) if args.eval else ""
    measured += bench_text(json.loads(args.bench.read_text()), args.bench_command) if args.bench else ""
    args.dest.mkdir(parents=True, exist_ok=True)
    for name in ("student.pt", "metrics.json"):
        shutil.copyfile(args.run_dir / name, args.dest / name)
    save_config(load_config(args.run_dir / "config.yaml"), args.dest / "config.yaml")
    params = sum(p.numel() for p in model.parameters())
    config = yaml.safe_load((args.dest / "config.yaml").read_text())
    card = model_card(args.dest.name, state, metrics, config, args.retrain, params, measured)
    atomic_write_text(args.dest / "README.md", card)
    sums = "".join(f"{sha256_file(args.dest / name)}  {name}\n" for name in FILES)
    atomic_write_text(args.dest / "SHA256SUMS", sums)
    print(sums, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
