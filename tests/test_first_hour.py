"""What a new user types first: `facekd train` on their faces and their teacher, with no config, distils
(at toy size here: 40 identities, 4 steps, 100 val pairs, the fetched int8bq SFace as the teacher)."""
from __future__ import annotations

import json
import logging

import yaml

from facekd.cli import main


def _small_val_pairs(facekd_home, path, per_fold: int = 5):
    """5 positive and 5 negative pairs of each fold of the val pairs: the LFW pairs.txt format, smaller."""
    lines = (facekd_home / "data/lfw/splits/val_pairs.txt").read_text().splitlines()
    folds, per_class = (int(x) for x in lines[0].split())
    kept = [f"{folds}\t{per_fold}"]
    for fold in range(folds):
        start = 1 + fold * 2 * per_class
        kept += lines[start:start + per_fold] + lines[start + per_class:start + per_class + per_fold]
    path.write_text("\n".join(kept) + "\n")
    return path


def _train(out, facekd_home, pairs, tmp_path, *args):
    teacher = facekd_home / "models/sface/sface_int8bq_original.onnx"
    toy = ["data.max_identities=40", "data.identities_per_batch=8", "train.epochs=1", "train.max_steps_per_epoch=4",
           "train.threads=1", f"data.val_pairs={pairs}", f"teacher.cache_dir={tmp_path / 'teacher-cache'}"]
    code = main(["train", "--quiet", "--data", str(facekd_home), "--teacher", str(teacher), "--out", str(out), *args,
                 *[f"--set={setting}" for setting in toy]])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())["val"]["accuracy"]


def test_train_without_a_config_distils_and_beats_the_labels_alone(facekd_home, tmp_path, caplog):
    pairs = _small_val_pairs(facekd_home, tmp_path / "val_pairs_100.txt")
    with caplog.at_level(logging.INFO, logger="facekd"):
        distilled = _train(tmp_path / "mine", facekd_home, pairs, tmp_path)
    config = yaml.safe_load((tmp_path / "mine/config.yaml").read_text())
    assert config["student"]["family"] == "teacher_derived" and config["loss"]["hard_fcd"] > 0
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("no --config: the demo's recipe") for m in messages)
    assert not any("every teacher term of the loss is 0" in m for m in messages)
    assert any("fed RGB 112×112, (x − 0)/1 per channel" in m and "graph itself then computes (x − 127.5)" in m
               for m in messages)  # the teacher's feeding, stated once, before training
    checked = json.loads((tmp_path / "mine/teacher_check.json").read_text())
    assert checked["val"]["accuracy"] > 0.95  # the teacher measured first: its preprocessing is right

    bare = tmp_path / "bare.yaml"
    bare.write_text("{}\n")  # every section's own defaults: a MobileFaceNet and the margin loss alone
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="facekd"):
        labels_only = _train(tmp_path / "labels-only", facekd_home, pairs, tmp_path, "--config", str(bare))
    warned = [r for r in caplog.records if "every teacher term of the loss is 0" in r.getMessage()]
    assert len(warned) == 1
    assert distilled > labels_only + 0.1
