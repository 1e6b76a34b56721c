"""insightface RecordIO without mxnet: framing byte for byte, labels, random access, errors, training."""
from __future__ import annotations

import pickle
import random
import struct

import numpy as np
import pytest

from facekd.cli import main
from facekd.training.checkpoint import load_checkpoint
from facekd.core.data import load_rgb_file
from facekd.training.recordio import (MAGIC, RecordIOError, RecordIOFaces, RecordIOReader, pack, unpack, write_face_recordio,
                               write_recordio)
from tests.conftest import run_torchrun
from tests.test_trainer import tiny_teacher  # noqa: F401  (fixture)


def test_framing_follows_the_published_layout(tmp_path):
    rec, idx = write_recordio(tmp_path / "x", [(0, b"abcde"), (7, b"")])
    data = rec.read_bytes()
    assert data[:8] == struct.pack("<II", MAGIC, 5) and data[8:13] == b"abcde" and data[13:16] == b"\0\0\0"
    assert data[16:24] == struct.pack("<II", MAGIC, 0) and len(data) == 24
    assert idx.read_text() == "0\t0\n7\t16\n"


def test_a_payload_holding_the_magic_is_split_and_joined(tmp_path):
    magic = struct.pack("<I", MAGIC)
    payload = b"head" + magic + b"middle!!" + magic + b"tail"
    rec, idx = write_recordio(tmp_path / "x", [(1, payload)])
    data = rec.read_bytes()
    flags = []
    offset = 0
    while offset < len(data):
        magic_read, lrecord = struct.unpack_from("<II", data, offset)
        assert magic_read == MAGIC
        flags.append(lrecord >> 29)
        offset += 8 + (lrecord & ((1 << 29) - 1))
        offset += -offset % 4
    assert flags == [1, 2, 3]
    assert RecordIOReader(rec, idx).read(1) == payload


def test_ir_header_with_scalar_and_vector_labels():
    labels, image = unpack(pack(3.0, b"JPEG", record_id=9))
    assert labels.tolist() == [3.0] and image == b"JPEG"
    labels, image = unpack(pack([1.0, 2.5, -4.0], b"JPEG"))
    assert labels.tolist() == [1.0, 2.5, -4.0] and image == b"JPEG"
    assert len(pack(3.0, b"")) == 24  # <IfQQ
    with pytest.raises(RecordIOError, match="header promises 5 labels"):
        unpack(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\0" * 8)


@pytest.fixture()
def recordio_faces(tiny_faces, tmp_path):
    """The tiny faces written as an insightface set: the same JPEG bytes, class c = person_c."""
    identities = [[p.read_bytes() for p in sorted((tiny_faces / f"person_{c}").iterdir())] for c in range(6)]
    return write_face_recordio(tmp_path / "rec", identities)


def test_faces_labels_and_random_access(recordio_faces, tiny_faces):
    faces = RecordIOFaces(recordio_faces)
    assert len(faces) == 24 and faces.labels.tolist() == [c for c in range(6) for _ in range(4)]
    assert faces.classes == [str(c) for c in range(6)]
    sources = [p for c in range(6) for p in sorted((tiny_faces / f"person_{c}").iterdir())]
    order = list(range(24))
    random.Random(0).shuffle(order)
    for i in order:
        assert np.array_equal(faces.load_rgb(i), load_rgb_file(sources[i]))
    assert str(faces.path(5)).endswith("train.rec#6")
    assert (recordio_faces / "property").read_text() == "6,112,112\n"
    clone = pickle.loads(pickle.dumps(faces))  # a DataLoader worker: its own file handle
    assert np.array_equal(clone.load_rgb(3), faces.load_rgb(3))
    assert len(RecordIOFaces(recordio_faces, max_identities=2)) == 8


def test_corrupt_record_is_named(recordio_faces):
    reader = RecordIOReader(recordio_faces / "train.rec", recordio_faces / "train.idx")
    offset = reader.offset(5)
    data = bytearray((recordio_faces / "train.rec").read_bytes())
    data[offset : offset + 4] = b"\0\0\0\0"
    (recordio_faces / "train.rec").write_bytes(bytes(data))
    faces = RecordIOFaces(recordio_faces)
    faces.load_rgb(3)  # other records still read
    with pytest.raises(RecordIOError, match=r"train.rec record 5 \(byte \d+\): bad magic 0x00000000"):
        faces.load_rgb(4)


def test_truncated_file_is_named(recordio_faces):
    rec = recordio_faces / "train.rec"
    data = rec.read_bytes()
    reader = RecordIOReader(rec, recordio_faces / "train.idx")
    rec.write_bytes(data[: reader.offset(10) + 20])  # ends inside record 10
    with pytest.raises(RecordIOError, match="lies beyond the end of .*train.rec .*truncated"):
        RecordIOFaces(recordio_faces)
    with pytest.raises(RecordIOError, match="record 10 .*ends .* bytes into the record: it is truncated"):
        RecordIOReader(rec, _index_upto(recordio_faces, 10)).read(10)


def _index_upto(folder, last_key):
    lines = [line for line in (folder / "train.idx").read_text().splitlines() if int(line.split("\t")[0]) <= last_key]
    path = folder / "partial.idx"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_teacher_cache_and_training_from_recordio_match_the_folder(recordio_faces, tiny_faces, tiny_teacher,  # noqa: F811
                                                                   tmp_path, capsys):
    common = [f"--teacher={tiny_teacher}", "--set=teacher.with_flip=false", "--set=teacher.batch_size=8",
              "--set=student.family=mobilefacenet"]
    assert main(["--quiet", "cache-teacher", f"--data={tiny_faces}", f"--set=teacher.cache_dir={tmp_path / 'a'}",
                 *common]) == 0
    assert main(["--quiet", "cache-teacher", f"--data={recordio_faces}", "--set=data.source=recordio",
                 f"--set=teacher.cache_dir={tmp_path / 'b'}", *common]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "embeddings.npy"), np.load(tmp_path / "b" / "embeddings.npy"))
    assert main(["--quiet", "train", f"--data={recordio_faces}", "--set=data.source=recordio", *common,
                 f"--set=teacher.cache_dir={tmp_path / 'b'}", "--set=student.width=0.25", "--set=train.epochs=1",
                 "--set=data.identities_per_batch=3", "--set=data.images_per_identity=2", "--set=train.threads=1",
                 "--set=loss.fcd=1.0", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "student.pt").is_file()


def test_ddp_over_a_recordio_set_builds_the_cache_in_parallel_then_trains(recordio_faces, tiny_teacher,  # noqa: F811
                                                                         tmp_path):
    """Two gloo ranks, nothing built beforehand: each rank opens the .rec itself, embeds its own
    share of the records into the shared cache, then trains on its own batches."""
    data = [f"--data={recordio_faces}", "--set=data.source=recordio", f"--teacher={tiny_teacher}",
            "--set=teacher.batch_size=4", "--set=student.family=mobilefacenet"]
    run_torchrun("train", *data, f"--set=teacher.cache_dir={tmp_path / 'two'}", "--set=student.width=0.25",
                 "--set=train.epochs=1", "--set=data.identities_per_batch=3", "--set=data.images_per_identity=2",
                 "--set=train.threads=1", "--set=loss.fcd=1.0", "--out", tmp_path / "run")
    # 24 faces in batches of 6 over two ranks: each rank took every other batch -> 2 steps each
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 2
    assert main(["--quiet", "cache-teacher", *data, f"--set=teacher.cache_dir={tmp_path / 'one'}"]) == 0
    for name in ("index.json", "embeddings.npy", "flipped.npy"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
