"""Where data and teacher come from: flags -> FACEKD_DATA/FACEKD_TEACHER -> FACEKD_HOME -> cache."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facekd.paths import ResourcesNotFound, cache_dir, home_problem, resolve_resources



def make_home(
    root: Path, teacher: str | None = "sface_fp32.onnx", detector: bool = True, train_list: bool = True
) -> Path:
    """A tiny home laid out like the shared folder: one identity, the splits, the models."""
    lfw = root / "data" / "lfw"
    (lfw / "aligned_112" / "Ann_Smith").mkdir(parents=True)
    (lfw / "aligned_112" / "Ann_Smith" / "Ann_Smith_0001.jpg").write_bytes(b"jpg")
    (lfw / "splits").mkdir()
    (lfw / "splits" / "val_pairs.txt").write_text("1\t1\nAnn_Smith\t1\t1\nAnn_Smith\t1\tAnn_Smith\t1\n")
    if train_list:
        (lfw / "splits" / "train_identities.txt").write_text("Ann_Smith\n")
    if teacher:
        (root / "models" / "sface").mkdir(parents=True)
        (root / "models" / "sface" / teacher).write_bytes(b"onnx")
    if detector:
        (root / "models" / "yunet").mkdir(parents=True)
        (root / "models" / "yunet" / "yunet_2023mar_int8bq.onnx").write_bytes(b"onnx")
    return root


def teacher_file(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "teacher.onnx"
    path.write_bytes(b"onnx")
    return path


def no_cache_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment whose cache is an empty folder, plus ``extra`` variables."""
    return {"FACEKD_CACHE": str(tmp_path / "empty_cache"), **extra}


def test_flags_win_over_every_variable_and_the_cache(tmp_path):
    flag_home = make_home(tmp_path / "flag")
    other = make_home(tmp_path / "other")
    cache = make_home(tmp_path / "cache")
    teacher = teacher_file(tmp_path / "t")
    env = {"FACEKD_DATA": str(other), "FACEKD_TEACHER": str(other / "models/sface/sface_fp32.onnx"),
           "FACEKD_HOME": str(other), "FACEKD_CACHE": str(cache)}
    found = resolve_resources(data=str(flag_home), teacher=str(teacher), env=env)
    assert found.aligned_root == flag_home / "data/lfw/aligned_112"
    assert found.val_pairs == flag_home / "data/lfw/splits/val_pairs.txt"
    assert found.train_identities == flag_home / "data/lfw/splits/train_identities.txt"
    assert found.val_images_root == found.aligned_root
    assert found.teacher == teacher
    assert found.detector == other / "models/yunet/yunet_2023mar_int8bq.onnx"  # FACEKD_HOME before the cache
    assert found.source == "flag"


def test_data_flag_accepts_aligned_root_and_lfw_folder(tmp_path):
    home = make_home(tmp_path / "h", train_list=False)
    teacher = teacher_file(tmp_path)
    for data in (home / "data/lfw/aligned_112", home / "data/lfw"):
        found = resolve_resources(data=data, teacher=teacher, env=no_cache_env(tmp_path))
        assert found.aligned_root == home / "data/lfw/aligned_112"
        assert found.val_pairs == home / "data/lfw/splits/val_pairs.txt"
        assert found.train_identities is None
        assert found.detector is None


def test_specific_variables_win_over_facekd_home(tmp_path):
    data_home = make_home(tmp_path / "data_home")
    home = make_home(tmp_path / "home")
    teacher = teacher_file(tmp_path / "t")
    env = no_cache_env(tmp_path, FACEKD_DATA=str(data_home / "data/lfw/aligned_112"),
                       FACEKD_TEACHER=str(teacher), FACEKD_HOME=str(home))
    found = resolve_resources(env=env)
    assert found.aligned_root == data_home / "data/lfw/aligned_112"
    assert found.teacher == teacher
    assert found.source == "data=env:FACEKD_DATA,teacher=env:FACEKD_TEACHER"


def test_facekd_home_prefers_fp32_teacher_then_int8bq(tmp_path):
    home = make_home(tmp_path / "h")
    (home / "models/sface/sface_int8bq_original.onnx").write_bytes(b"onnx")
    cache = make_home(tmp_path / "cache")
    found = resolve_resources(env={"FACEKD_HOME": str(home), "FACEKD_CACHE": str(cache)})
    assert found.source == "env:FACEKD_HOME"
    assert found.teacher == home / "models/sface/sface_fp32.onnx"
    assert found.detector == home / "models/yunet/yunet_2023mar_int8bq.onnx"
    (home / "models/sface/sface_fp32.onnx").unlink()
    assert resolve_resources(env={"FACEKD_HOME": str(home)}).teacher == home / "models/sface/sface_int8bq_original.onnx"


@pytest.mark.parametrize("variables, relative", [
    ({"FACEKD_CACHE": "custom"}, "custom"),
    ({"XDG_CACHE_HOME": "xdg"}, "xdg/facekd"),
    ({"HOME": "user"}, "user/.cache/facekd"),
    ({"FACEKD_CACHE": "custom", "XDG_CACHE_HOME": "xdg", "HOME": "user"}, "custom"),
])
def test_cache_location_order(tmp_path, variables, relative):
    env = {name: str(tmp_path / value) for name, value in variables.items()}
    assert cache_dir(env) == tmp_path / relative
    make_home(tmp_path / relative, teacher="sface_int8bq_original.onnx")
    found = resolve_resources(env=env)
    assert found.source == "cache"
    assert found.aligned_root == tmp_path / relative / "data/lfw/aligned_112"
    assert found.teacher == tmp_path / relative / "models/sface/sface_int8bq_original.onnx"


def test_data_from_flag_teacher_from_cache_reports_both(tmp_path):
    data_home = make_home(tmp_path / "data_home", teacher=None)
    cache = make_home(tmp_path / "cache")
    found = resolve_resources(data=data_home, env={"FACEKD_CACHE": str(cache)})
    assert found.teacher == cache / "models/sface/sface_fp32.onnx"
    assert found.source == "data=flag,teacher=cache"


def test_nothing_anywhere_says_what_to_set(tmp_path):
    with pytest.raises(ResourcesNotFound) as error:
        resolve_resources(env=no_cache_env(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    for hint in ("--data", "FACEKD_DATA", "FACEKD_HOME", "facekd fetch", str(tmp_path / "empty_cache")):
        assert hint in message


def test_missing_teacher_only_names_teacher_settings(tmp_path):
    data_home = make_home(tmp_path / "d", teacher=None)
    with pytest.raises(ResourcesNotFound, match="no teacher model: pass --teacher, set FACEKD_TEACHER"):
        resolve_resources(data=data_home, env=no_cache_env(tmp_path))


def test_wrong_explicit_setting_is_an_error_not_a_fallback(tmp_path):
    cache = make_home(tmp_path / "cache")
    env = {"FACEKD_CACHE": str(cache)}
    with pytest.raises(ResourcesNotFound, match=r"^--data=.*no aligned faces"):
        resolve_resources(data=tmp_path / "nowhere", env=env)
    with pytest.raises(ResourcesNotFound, match=r"^FACEKD_TEACHER=.*no such ONNX file"):
        resolve_resources(env={**env, "FACEKD_TEACHER": str(tmp_path / "missing.onnx")})
    teacherless = make_home(tmp_path / "teacherless", teacher=None)
    with pytest.raises(ResourcesNotFound, match=r"^FACEKD_HOME=.*no teacher at models/sface/sface_fp32.onnx"):
        resolve_resources(env={**env, "FACEKD_HOME": str(teacherless)})


def test_aligned_faces_without_val_pairs_resolve_with_validation_off(tmp_path):
    home = make_home(tmp_path / "h")
    (home / "data/lfw/splits/val_pairs.txt").unlink()
    found = resolve_resources(env={"FACEKD_HOME": str(home)})
    assert found.val_pairs is None and found.aligned_root == home / "data/lfw/aligned_112"
    assert "no data/lfw/splits/val_pairs.txt" in home_problem(home)


def test_a_bare_folder_of_identities_is_data(tmp_path):
    faces = tmp_path / "MYFACES"
    (faces / "ann").mkdir(parents=True)
    teacher = tmp_path / "t.onnx"
    teacher.write_bytes(b"x")
    found = resolve_resources(data=faces, teacher=teacher, env={})
    assert (found.aligned_root, found.val_pairs, found.train_identities) == (faces, None, None)


def test_home_problem_is_none_only_for_a_complete_home(tmp_path):
    assert home_problem(make_home(tmp_path / "ok")) is None
    assert "no aligned faces" in home_problem(tmp_path / "nowhere")
    assert "no teacher" in home_problem(make_home(tmp_path / "teacherless", teacher=None))


def test_cache_without_faces_counts_as_absent(tmp_path):
    cache = make_home(tmp_path / "cache")
    shutil.rmtree(cache / "data/lfw/aligned_112")
    with pytest.raises(ResourcesNotFound, match="^no face data"):
        resolve_resources(env={"FACEKD_CACHE": str(cache)})


def test_shared_folder_resolves_as_facekd_home(facekd_home):
    found = resolve_resources(env={"FACEKD_HOME": str(facekd_home)})
    assert found.source == "env:FACEKD_HOME"
    assert found.teacher.name == "sface_fp32.onnx"
    assert found.detector is not None and found.detector.is_file()
    assert found.train_identities is not None and found.train_identities.is_file()
    assert found.val_pairs.read_text().startswith("10\t60")
