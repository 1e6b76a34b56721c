"""The facekd CLI: user errors are one line with exit code 2; eval matches the library."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facekd.cli import main
from facekd.training.checkpoint import save_checkpoint, student_state
from facekd.training.models import MobileFaceNet
from facekd.core.preprocess import PreprocessSpec
from tests.conftest import write_toy_bin
from tests.test_derived import ChainTeacher, _export
from tests.test_trainer import tiny_pairs, tiny_teacher  # noqa: F401  (fixtures)


def test_missing_checkpoint_is_one_line_error(capsys, tmp_path):
    code = main(["--quiet", "export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "out"),
                 "--data", str(tmp_path), "--teacher", str(tmp_path / "t.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("facekd: error:") and "\n" not in err


def test_unknown_override_is_one_line_error(capsys):
    code = main(["train", "--out", "x", "--set", "train.epochz=1"])
    assert code == 2
    assert "unknown config key train.epochz; did you mean train.epochs?" in capsys.readouterr().err


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
    from facekd.export.formats import FORMATS

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    names = FORMATS.keys() if isinstance(FORMATS, dict) else [row.name for row in FORMATS]
    for name in names:
        assert name in text


def _readme_block(heading: str) -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index(heading):]
    block = section[section.index("```bash") + len("```bash"): section.index("```", section.index("```bash") + 7)]
    return [line for line in block.strip().splitlines() if line.startswith("facekd ")]


def test_readme_own_data_commands_work_verbatim(tiny_faces, tiny_pairs, tmp_path, monkeypatch, capsys):  # noqa: F811
    """The README's own-data lines, run as written in a folder holding MYFACES, MYTEACHER.onnx and
    MYPAIRS.txt; train, export and bench get extra --set for the 6-identity toy data (batch size, width,
    epochs; export: fp32 only)."""
    import shutil
    import shlex

    shutil.copytree(tiny_faces, tmp_path / "MYFACES")
    # a chain teacher (SFace's shape in miniature): the default recipe derives its student from the teacher's network
    _export(ChainTeacher(rank1_head=False), tmp_path / "MYTEACHER.onnx")
    shutil.copy(tiny_pairs, tmp_path / "MYPAIRS.txt")
    monkeypatch.chdir(tmp_path)
    for name in ("FACEKD_HOME", "FACEKD_DATA", "FACEKD_TEACHER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FACEKD_CACHE", str(tmp_path / "cache"))
    toy = ["--set", "data.identities_per_batch=3", "--set", "data.images_per_identity=2", "--set", "student.width=0.25",
           "--set", "train.epochs=1", "--set", "train.threads=1", "--set", "bench.threads=[1]", "--set", "bench.timing.min_runs=3",
           "--set", "bench.timing.min_seconds=0.05", "--set", "export.golden=false"]
    # and fp32 only: after one epoch on 6 generated identities every pair score sits within a hair of the
    # threshold, so any int8 flips half the 20 pairs (worst cosine 0.9994) and the int8 bar rejects it
    toy_export = ["--set", "export.precisions={onnx: [fp32]}"]
    lines = _readme_block("### 2. Distil your own teacher on your own faces")
    assert [shlex.split(line)[1] for line in lines] == ["cache-teacher", "train", "export", "bench"]
    for line in lines:
        argv = shlex.split(line)[1:]
        extra = {"train": toy, "export": toy + toy_export, "bench": toy}.get(argv[0], [])
        assert main(["--quiet", *argv, *extra]) == 0, line
    assert (tmp_path / "runs/mine/student.pt").is_file()
    assert json.loads((tmp_path / "runs/mine/export/export_summary.json").read_text())[0]["status"] == "ok"
    rows = json.loads((tmp_path / "runs/mine/bench/result.json").read_text())["rows"]
    assert any(row["status"] == "ok" and row["accuracy"] for row in rows)


def test_training_without_val_pairs_says_so_once(tiny_faces, tiny_teacher, tmp_path, caplog):  # noqa: F811
    import logging

    args = ["--quiet", "train", "--data", str(tiny_faces), "--teacher", str(tiny_teacher), "--out", str(tmp_path / "run"),
            "--set", f"teacher.cache_dir={tmp_path / 'cache'}", "--set", "data.identities_per_batch=3",
            "--set", "data.images_per_identity=2", "--set", "student.width=0.25", "--set", "train.epochs=2",
            "--set", "train.threads=1", "--set", "student.family=mobilefacenet"]
    with caplog.at_level(logging.WARNING, logger="facekd.training"):
        assert main(args) == 0
    said = [r.getMessage() for r in caplog.records if "no validation pairs" in r.getMessage()]
    assert len(said) == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val"] is None and metrics["epochs"] == 2


def _toy_export_args(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "s.pt", student_state(MobileFaceNet(width=0.25).eval(), PreprocessSpec()))
    return [str(ckpt), "--data", str(tiny_faces), "--teacher", str(tiny_teacher), "--set", f"data.val_pairs={tiny_pairs}",
            "--set", "export.calib_count=8", "--set", "export.parity_count=8", "--set", "export.golden=false"]


def test_export_exit_code_says_whether_every_requested_artifact_passed(tiny_faces, tiny_teacher, tiny_pairs,  # noqa: F811
                                                                        tmp_path, capsys):
    args = _toy_export_args(tiny_faces, tiny_teacher, tiny_pairs, tmp_path)
    assert main(["--quiet", "export", *args, "--formats", "onnx-fp32", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "all 2 made (· = not runnable on this host)"  # onnx-fp32 and the teacher beside it
    assert "onnx-fp32" in out[0] and " ok " in out[0] and "fp32 worst_cos" in out[0] and ">= 0.999" in out[0]
    assert "teacher-onnx-fp32" in out[1] and " ok " in out[1]
    code = main(["--quiet", "export", *args, "--formats", "onnx-fp32", "torch", "--out", str(tmp_path / "b"),
                 "--set", "export.bars.fp32.worst_cos=1.5"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 3
    assert out[-1] == "2 of 3 failed"  # the teacher's copy is no artifact of the student: no bar
    rejected = [line for line in out if line.startswith("✗")]
    assert len(rejected) == 2 and all("rejected" in line and "below its bar 1.5 by" in line for line in rejected)


def test_outcome_counts_unavailable_only_when_strict():
    from facekd.outcome import Line, exit_code, table

    lines = [Line("export", "onnx-fp32", "ok"), Line("export", "tensorrt-fp16", "unavailable", "TensorRT not installed"),
             Line("export", "coreml-fp16", "validated-structure-only", "needs macOS")]
    assert exit_code(lines) == 0 and exit_code(lines, strict=True) == 3
    assert table(lines, strict=True).splitlines()[-1] == "2 of 3 failed (strict: unavailable counts)"
    assert exit_code([*lines, Line("bench", "onnx-int8 threads=1 batch=1", "failed", "boom")]) == 3


def test_demo_exit_code_propagates_a_rejected_artifact(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, capsys):  # noqa: F811
    args = ["--quiet", "demo", "--data", str(tiny_faces), "--teacher", str(tiny_teacher), "--out", str(tmp_path / "demo"),
            *[f"--set={s}" for s in (
                f"data.val_pairs={tiny_pairs}", f"teacher.cache_dir={tmp_path / 'cache'}", "student.family=mobilefacenet",
                "student.width=0.25", "data.identities_per_batch=3", "data.images_per_identity=2", "train.epochs=1",
                "train.eval_every=1", "train.threads=1", "loss.fcd=1.0", "export.calib_count=8", "export.parity_count=8",
                "export.formats=[onnx-fp32]", "export.golden=false", "export.bars.fp32.worst_cos=1.5", "bench.threads=[1]",
                "bench.timing.min_runs=3", "bench.timing.min_seconds=0.05", "demo.reference_student=")]]
    assert main(args) == 3
    out = capsys.readouterr().out
    assert "✗ export  onnx-fp32" in out and "rejected" in out


TINY_DEMO_SETTINGS = ("student.family=mobilefacenet", "student.width=0.25", "data.identities_per_batch=3",
                      "data.images_per_identity=2", "train.epochs=1", "train.threads=1", "loss.fcd=1.0",
                      "export.calib_count=8", "export.parity_count=8", "export.formats=[onnx-fp32]",
                      "export.golden=false", "bench.threads=[1]", "bench.timing.min_runs=3", "bench.timing.min_seconds=0.05",
                      "demo.reference_student=")


@pytest.fixture
def machine_without_data(tmp_path, monkeypatch):
    """No FACEKD_HOME/DATA/TEACHER, an empty user cache; returns the cache and the list of fetches made."""
    for name in ("FACEKD_HOME", "FACEKD_DATA", "FACEKD_TEACHER", "FACEKD_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("FACEKD_CACHE", str(cache))
    return cache


def test_demo_on_a_machine_without_data_fetches_first_then_runs(machine_without_data, tiny_faces, tiny_teacher,  # noqa: F811
                                                              tiny_pairs, tmp_path, monkeypatch, capsys):
    import shutil

    import facekd.fetch

    fetches = []

    def fetch_into_the_cache(progress=True, **_):  # stands in for the downloads (tests/test_fetch.py covers them)
        fetches.append(progress)
        shutil.copytree(tiny_faces, machine_without_data / "data/lfw/aligned_112")
        (machine_without_data / "models/sface").mkdir(parents=True)
        shutil.copy(tiny_teacher, machine_without_data / "models/sface/sface_int8bq_original.onnx")

    monkeypatch.setattr(facekd.fetch, "fetch", fetch_into_the_cache)
    out = tmp_path / "demo"
    args = ["demo", "--quiet", "--out", str(out), f"--set=data.val_pairs={tiny_pairs}",
            f"--set=teacher.cache_dir={tmp_path / 'teacher-cache'}", *[f"--set={s}" for s in TINY_DEMO_SETTINGS]]
    assert main(args) == 0
    assert fetches == [False]  # --quiet after the subcommand reached the fetch too
    summary = json.loads((out / "demo.json").read_text())
    config = (out / "config.yaml").read_text()
    assert Path(summary["report_html"]).is_file() and "sface_int8bq_original.onnx" in config
    assert main(args) == 0 and len(fetches) == 1  # the fetched copy is found the second time


def test_demo_does_not_download_over_a_copy_the_user_named(machine_without_data, tmp_path, monkeypatch, capsys):
    import facekd.fetch

    monkeypatch.setattr(facekd.fetch, "fetch", lambda **_: pytest.fail("fetched although FACEKD_HOME was set"))
    monkeypatch.setenv("FACEKD_HOME", str(tmp_path / "nowhere"))
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "FACEKD_HOME=" in capsys.readouterr().err


def test_demo_without_data_or_network_names_what_it_tried_and_the_variables(machine_without_data, tmp_path,
                                                                           monkeypatch, capsys):
    import facekd.fetch

    def offline(**_):
        raise facekd.fetch.FetchError("cannot reach vis-www.cs.umass.edu: run `facekd fetch` again to resume")

    monkeypatch.setattr(facekd.fetch, "fetch", offline)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach vis-www.cs.umass.edu" in err
    assert "FACEKD_HOME" in err and "FACEKD_MIRROR" in err


def test_eval_prints_one_table_for_several_sets(tmp_path, tiny_faces, tiny_pairs, capsys):  # noqa: F811
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "s.pt", student_state(MobileFaceNet(width=0.25).eval(), PreprocessSpec()))
    write_toy_bin(tmp_path / "toy_bin.bin", tiny_faces, count=20)
    out = tmp_path / "suite.json"
    assert main(["--quiet", "eval", "--checkpoint", str(ckpt), "--sets", str(tmp_path / "toy_bin.bin"),
                 f"{tiny_pairs}={tiny_faces}", "--flip-test", "--json", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["set", "pairs", "accuracy"]
    assert table[1].startswith("toy_bin") and table[1].endswith("on") and " 20 " in table[1]
    assert table[2].startswith("pairs") and " 20 " in table[2]
    result = json.loads(out.read_text())
    assert result["flip_test"] is True and set(result["sets"]) == {"toy_bin", "pairs"}
    assert main(["--quiet", "eval", "--checkpoint", str(ckpt), "--sets", str(tiny_pairs)]) == 2
    assert "needs its images" in capsys.readouterr().err


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import facekd.cli as cli
    from facekd.core.errors import InputError

    monkeypatch.setattr(cli, "cmd_report", lambda args: (_ for _ in ()).throw(InputError("pass a result JSON")))
    assert main(["report", "x.json", "--out", "r"]) == 2
    assert capsys.readouterr().err == "facekd: error: pass a result JSON\n"
    monkeypatch.setattr(cli, "cmd_report", lambda args: 1 / 0)
    assert main(["report", "x.json", "--out", "r"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "bug in facekd" in err.splitlines()[-1]


def test_every_error_a_user_can_cause_is_a_facekd_error():
    import importlib
    import inspect
    import pkgutil

    from facekd.core.errors import FacekdError

    internal = {"ProtocolError", "WorkerError", "WorkerDied"}  # worker protocol faults: rows of a bench, not user input
    outside = []
    for package in ("facekd",):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            module = importlib.import_module(info.name)
            outside += [f"{info.name}.{name}" for name, cls in inspect.getmembers(module, inspect.isclass)
                        if cls.__module__ == info.name and issubclass(cls, Exception)
                        and not issubclass(cls, FacekdError) and name not in internal]
    assert outside == []


def test_the_demo_benches_the_profile_faces_it_finds_beside_the_faces(facekd_home, tmp_path):
    from facekd.cli import build_parser, demo_config

    from facekd.api import DEMO_CONFIG

    args = build_parser().parse_args(["demo", "--data", str(facekd_home), "--out", str(tmp_path / "demo")])
    args.config = str(DEMO_CONFIG)
    cfg = demo_config(args)
    assert cfg.bench.suites == [str(facekd_home / "data/cfp/val/cfp_fp_val.bin")]
    assert "teacher-onnx-fp32" in cfg.bench.suite_artifacts
    args = build_parser().parse_args(["demo", "--data", str(facekd_home), "--out", "x", "--set", "bench.suites=[a.bin]"])
    args.config = str(DEMO_CONFIG)
    assert demo_config(args).bench.suites == ["a.bin"]  # the user's own sets win
