"""The Python API: facekd.load (zoo name, checkpoint, exported artifact) -> embed / verify / calibrate / export."""
from __future__ import annotations

import numpy as np
import pytest

import facekd
from facekd.api import ModelNotFound
from tests.test_trainer import tiny_pairs, tiny_teacher  # noqa: F401  (fixtures)
from facekd.core.data import FaceFolder


@pytest.fixture(scope="module")
def val_faces(facekd_home, tmp_path_factory):
    """40 val identities with at least 3 faces each (never trained on by the zoo student)."""
    root = facekd_home / "data/lfw/aligned_112"
    names = [n for n in (facekd_home / "data/lfw/splits/val_identities.txt").read_text().split()
             if len(list((root / n).glob("*.jpg"))) >= 3][:40]
    listing = tmp_path_factory.mktemp("ids") / "ids.txt"
    listing.write_text("\n".join(names) + "\n")
    return f"{listing}={root}", FaceFolder(root, identities=names)


def test_a_zoo_student_embeds_calibrates_and_verifies_real_faces(val_faces):
    spec, folder = val_faces
    model = facekd.load("sface-derived-k60")
    assert model.checkpoint is not None and model.checkpoint.name == "student.pt"
    first = np.stack([folder.load_rgb(i) for i in range(3)])  # one person's first three faces
    vectors = model.embed(first)
    assert vectors.shape == (3, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    with pytest.raises(facekd.api.ConfigError, match="no operating points: call calibrate"):
        model.verify(first[:1], first[1:2])
    points = model.calibrate(spec)
    assert points.identities == 40 and points.smallest_far <= 1e-2
    other = folder.load_rgb(int(np.flatnonzero(np.asarray(folder.labels) != folder.labels[0])[0]))
    same, scores = model.verify(np.stack([first[0], first[0]]), np.stack([first[1], other]), far=1e-2)
    assert same.tolist() == [True, False] and scores[0] > scores[1]


def test_an_exported_artifact_loads_with_its_manifest_and_embeds_like_its_checkpoint(tiny_faces, tiny_teacher,  # noqa: F811
                                                                                    tiny_pairs, tmp_path):
    import torch

    from facekd.training.checkpoint import save_checkpoint, student_state
    from facekd.training.models import MobileFaceNet
    from facekd.core.preprocess import PreprocessSpec

    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "student.pt", student_state(MobileFaceNet(width=0.25).eval(), PreprocessSpec()))
    student = facekd.load(checkpoint)
    faces = [str(p) for p in sorted(tiny_faces.glob("*/*.jpg"))[:6]]
    settings = ["export.calib_count=4", "export.parity_count=4", "export.golden=false", "export.teacher=false",
                f"data.val_pairs={tiny_pairs}"]
    records = student.export(tmp_path / "export", formats=["onnx-fp32"], data=tiny_faces, teacher=tiny_teacher,
                             overrides=settings, progress=False)
    assert [record.status for record in records] == ["ok"]
    artifact = facekd.load(tmp_path / "export" / "onnx-fp32")
    assert artifact.checkpoint is None and artifact.info["manifest"]["format"] == "onnx"
    assert np.min(np.sum(artifact.embed(faces) * student.embed(faces), axis=1)) > 0.9999
    with pytest.raises(facekd.api.ConfigError, match="exported artifact already"):
        artifact.export(tmp_path / "again")


def test_an_unknown_name_suggests_the_nearest_zoo_student():
    with pytest.raises(ModelNotFound, match="did you mean sface-derived-k60"):
        facekd.load("sface-derived-k6")
