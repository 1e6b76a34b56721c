"""Run config: YAML + overrides, typed, unknown keys refused, round trip."""
from __future__ import annotations

from pathlib import Path

import pytest

from facekd.config import ConfigError, RunConfig, load_config, save_config
from facekd.core.preprocess import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train: {epochs: 7, seed: 3}\nloss: {fcd: 2.5}\nstudent:\n  preprocess: {channel_order: BGR}\n")
    cfg = load_config(path, ["train.epochs=9", "loss.rad=0.5", "optim.step_milestones=[0.5, 0.75]"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.train.epochs, cfg.train.seed) == (9, 3)
    assert (cfg.loss.fcd, cfg.loss.rad) == (2.5, 0.5)
    assert cfg.optim.step_milestones == [0.5, 0.75]
    assert cfg.student.preprocess == PreprocessSpec(channel_order="BGR")
    assert cfg.teacher.preprocess.mean == (0.0, 0.0, 0.0)


def test_round_trip_through_saved_yaml(tmp_path):
    cfg = load_config(None, ["train.epochs=2", "student.width=0.5", "data.aligned_root=/x"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown config key train.epoch; did you mean train.epochs"),
    ("nosuch.key=1", "unknown config key nosuch.key; sections: bench, data"),
    ("train.epochs.x=1", "'epochs' is not a config section"),
    ("train.epochs=many", "train.epochs: expected int"),
    ("train.amp=maybe", "train.amp: expected true/false"),
    ("student.preprocess.channel_order=XYZ", "channel_order must be one of"),
    ("no_equals_sign", "must look like key.sub=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_file_builds_on_the_one_it_extends_and_overrides_come_last(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "recipe.yaml").write_text("train: {epochs: 3, seed: 5}\nloss: {hard_fcd: 100.0}\n")
    (tmp_path / "ci.yaml").write_text("extends: base/recipe.yaml\ntrain: {epochs: 1}\n")
    cfg = load_config(tmp_path / "ci.yaml", ["train.seed=8"])
    assert (cfg.train.epochs, cfg.train.seed, cfg.loss.hard_fcd) == (1, 8, 100.0)
    assert load_config(tmp_path / "ci.yaml").train.seed == 5


def test_a_config_extending_itself_or_nothing_is_one_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config(tmp_path / "c.yaml")


def test_the_ci_config_trains_the_demo_student():
    ci, demo = load_config(REPO / "configs" / "ci.yaml"), load_config(REPO / "facekd" / "demo.yaml")
    assert (ci.student, ci.data, ci.teacher, ci.loss, ci.optim, ci.train) == (
        demo.student, demo.data, demo.teacher, demo.loss, demo.optim, demo.train)
    assert ci.demo.reference_student == "" and ci.bench.threads == [1]


def test_bad_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trian: {epochs: 3}\n")
    with pytest.raises(ConfigError, match="unknown config key trian; did you mean train[?]"):
        load_config(unknown)


def test_map_fields_take_new_keys_from_files_and_overrides_but_sections_do_not(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("export: {precisions: {tensorrt: [fp16]}, bars: {int8: {mean_cos: 0.99}}}\n")
    cfg = load_config(path, ["export.precisions.onnx=[int8]", "export.bars.int8.worst_cos=null"])
    assert cfg.export.precisions == {"tensorrt": ["fp16"], "onnx": ["int8"]}
    # a bar given in part keeps the default's other bounds
    assert (cfg.export.bars["int8"].worst_cos, cfg.export.bars["int8"].mean_cos, cfg.export.bars["int8"].max_flip_rate) \
        == (None, 0.99, 0.005)
    path.write_text("export: {precisons: {tensorrt: [fp16]}}\n")
    with pytest.raises(ConfigError, match="unknown config key export.precisons; did you mean export.precisions[?]"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown config key export.calib;"):
        load_config(None, ["export.calib=3"])


@pytest.mark.parametrize("override, suggestion", [
    ("train.epoch=3", "train.epochs"),        # a typo within the section
    ("epochs=3", "train.epochs"),             # the right key in the wrong section
    ("trian.epochs=3", "train.epochs"),       # a typo in the section
    ("loss.hardfcd=1", "loss.hard_fcd"),
])
def test_a_mistyped_key_names_the_nearest_one(override, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}[?]"):
        load_config(None, [override])


def test_a_config_saved_by_an_earlier_version_loads_with_its_retired_keys_named(tmp_path, caplog):
    saved = tmp_path / "config.yaml"
    saved.write_text("export:\n  int8_finetune_steps: 150\n  calib_count: 32\n")
    with caplog.at_level("WARNING", logger="facekd.config"):
        cfg = load_config(saved)
    assert cfg.export.calib_count == 32
    assert "export.int8_finetune_steps is retired" in caplog.text and "train.int8_aware_epochs" in caplog.text


def test_timing_keys_of_an_earlier_version_are_read_into_bench_timing(tmp_path, caplog):
    saved = tmp_path / "config.yaml"
    saved.write_text("bench:\n  min_runs: 7\n  threads: [1]\n  timing: {warmup_count: 2}\n")
    with caplog.at_level("WARNING", logger="facekd.config"):
        cfg = load_config(saved, ["bench.max_seconds=9"])
    assert (cfg.bench.timing.min_runs, cfg.bench.timing.warmup_count, cfg.bench.timing.max_seconds) == (7, 2, 9.0)
    assert cfg.bench.threads == [1]
    assert "bench.min_runs is bench.timing.min_runs now" in caplog.text and "bench.max_seconds is" in caplog.text
    with pytest.raises(ConfigError, match="min_runs must be >= 1"):
        load_config(None, ["bench.timing.min_runs=0"])
