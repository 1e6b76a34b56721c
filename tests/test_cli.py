"""The facekd CLI: user errors are one line with exit code 2; eval matches the library."""
from __future__ import annotations

import json

import pytest
import torch

from facekd.cli import main
from training.checkpoint import save_checkpoint, student_state
from training.models import MobileFaceNet
from training.preprocess import PreprocessSpec


def test_missing_checkpoint_is_one_line_error(capsys, tmp_path):
    code = main(["--quiet", "export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "out"),
                 "--data", str(tmp_path), "--teacher", str(tmp_path / "t.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("facekd: error:") and "\n" not in err


def test_unknown_override_is_one_line_error(capsys):
    code = main(["train", "--out", "x", "--set", "train.epochz=1"])
    assert code == 2
    assert "unknown key 'epochz'" in capsys.readouterr().err


def test_eval_checkpoint_on_pairs_writes_json(tmp_path, tiny_faces, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "s.pt"
    save_checkpoint(ckpt, student_state(MobileFaceNet(width=0.25).eval(), PreprocessSpec(), threshold=0.3))
    pairs = tmp_path / "pairs.txt"
    lines = ["10\t1"]
    for fold in range(10):
        lines += [f"person_{fold % 6}\t1\t2", f"person_{fold % 6}\t1\tperson_{(fold + 1) % 6}\t3"]
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval.json"
    assert main(["--quiet", "eval", "--checkpoint", str(ckpt), "--pairs", str(pairs),
                 "--images", str(tiny_faces), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_pairs"] == 20 and 0.0 <= result["accuracy"] <= 1.0
    assert json.loads(capsys.readouterr().out) == result


def test_export_help_lists_every_format(capsys):
    from export.formats import FORMATS

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    names = FORMATS.keys() if isinstance(FORMATS, dict) else [row.name for row in FORMATS]
    for name in names:
        assert name in text
