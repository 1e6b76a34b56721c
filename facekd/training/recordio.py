"""insightface RecordIO training sets (``train.rec`` + ``train.idx`` + ``property``) without mxnet.

Record framing (dmlc-core ``recordio``): every record starts on a 4-byte boundary with the magic
``0xced7230a`` (uint32, little-endian), then ``lrecord`` (uint32): the upper 3 bits are a
continuation flag ``cflag``, the lower 29 bits the length of this part; the part follows, zero-
padded to 4 bytes. A payload that itself contains the magic (at a 4-byte-aligned offset) is
written in parts: ``cflag`` 1 (first), 2 (middle), 3 (last), 0 for a record in one part; a reader
joins the parts with the magic between them.

Payload (mxnet ``recordio.pack``): the IRHeader ``<IfQQ`` = (flag uint32, label float32,
id uint64, id2 uint64); when ``flag > 0`` a vector of ``flag`` float32 labels follows and replaces
``label``; the rest is the encoded image (JPEG). ``train.idx`` lists ``key<TAB>byte offset`` lines.

insightface's header record (key 0) has ``flag > 0`` and labels ``(first identity key, end)``:
images are keys ``1 .. label[0]-1``, identity records keys ``label[0] .. label[1]-1``, each with
labels ``(first image key, end image key)``. A file without that header lists images only.
``property`` holds ``num_classes,height,width``.
"""
from __future__ import annotations

import array
import hashlib
import os
import struct
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from facekd.core.data import DatasetError
from facekd.core.errors import InputError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(DatasetError):
    """A RecordIO file that cannot be read; the message names the file, the record and what to do."""


def pack(label: float | Sequence[float], image: bytes, record_id: int = 0, id2: int = 0) -> bytes:
    """IRHeader + image bytes, as mxnet ``recordio.pack`` writes them (vector labels set ``flag``)."""
    if isinstance(label, (int, float)):
        return _HEADER.pack(0, float(label), record_id, id2) + image
    labels = np.asarray(label, dtype=np.float32)
    return _HEADER.pack(len(labels), 0.0, record_id, id2) + labels.tobytes() + image


def unpack(payload: bytes, where: str = "record") -> tuple[np.ndarray, bytes]:
    """(labels as float32 [flag or 1], image bytes) of one record's payload."""
    if len(payload) < _HEADER.size:
        raise RecordIOError(f"{where}: {len(payload)} bytes, shorter than its {_HEADER.size}-byte header")
    flag, label, _, _ = _HEADER.unpack_from(payload)
    body = payload[_HEADER.size:]
    if flag == 0:
        return np.asarray([label], dtype=np.float32), body
    if len(body) < 4 * flag:
        raise RecordIOError(f"{where}: header promises {flag} labels but the record is {len(payload)} bytes")
    return np.frombuffer(body[: 4 * flag], dtype=np.float32).copy(), body[4 * flag:]


def _frame(payload: bytes) -> bytes:
    """The payload as one or more record parts (split where it contains the magic)."""
    parts, start = [], 0
    for offset in range(0, len(payload) - 3, 4):
        if payload[offset : offset + 4] == _MAGIC_BYTES:
            parts.append(payload[start:offset])
            start = offset + 4
    parts.append(payload[start:])
    out = bytearray()
    for number, part in enumerate(parts):
        cflag = 0 if len(parts) == 1 else (1 if number == 0 else (3 if number == len(parts) - 1 else 2))
        if len(part) > _LENGTH_MASK:
            raise InputError(f"a record part of {len(part)} bytes exceeds RecordIO's 29-bit length")
        out += _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(part)) + part + b"\0" * (-len(part) % 4)
    return bytes(out)


def write_recordio(prefix: str | os.PathLike, payloads: Iterable[tuple[int, bytes]]) -> tuple[Path, Path]:
    """Write ``prefix.rec`` and ``prefix.idx`` from (key, payload) pairs, in order."""
    rec_path, idx_path = Path(f"{prefix}.rec"), Path(f"{prefix}.idx")
    lines = []
    with open(rec_path, "wb") as rec:
        for key, payload in payloads:
            lines.append(f"{key}\t{rec.tell()}\n")
            rec.write(_frame(payload))
    idx_path.write_text("".join(lines))
    return rec_path, idx_path


def write_face_recordio(folder: str | os.PathLike, identities: Sequence[Sequence[bytes]], size: int = 112) -> Path:
    """An insightface-layout set in ``folder`` (train.rec/.idx/property): header record, images
    labelled by identity, one range record per identity. ``identities[c]`` are JPEG bytes of class c."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, ranges, key = [], [], 1
    for label, faces in enumerate(identities):
        start = key
        for face in faces:
            images.append((key, pack(float(label), face, key)))
            key += 1
        ranges.append((start, key))
    first_identity = key
    records = [(0, pack([first_identity, first_identity + len(ranges)], b""))] + images
    records += [(first_identity + c, pack([start, end], b"")) for c, (start, end) in enumerate(ranges)]
    write_recordio(folder / "train", records)
    (folder / "property").write_text(f"{len(identities)},{size},{size}\n")
    return folder


def _read_index(idx_path: Path, rec_path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys ascending, their byte offsets) of a ``.idx``, as int64 arrays; a key listed twice keeps
    its last offset. Parsed by numpy's C reader; a file it refuses, or with an offset out of range,
    is read again line by line for a message naming the line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty file
        try:
            table = np.loadtxt(idx_path, dtype=np.int64, delimiter="\t", usecols=(0, 1), ndmin=2, comments=None)
        except ValueError:
            table = None
    if table is None or not np.all((table[:, 1] >= 0) & (table[:, 1] < size)):
        table = _read_index_lines(idx_path, rec_path, size)
    keys, offsets = table[:, 0], table[:, 1]
    if not np.all(keys[1:] > keys[:-1]):  # not written in key order, or a key listed twice
        order = np.argsort(keys, kind="stable")
        keys, offsets = keys[order], offsets[order]
        last = np.append(keys[1:] != keys[:-1], True)  # the last of each run of equal keys
        keys, offsets = keys[last], offsets[last]
    return np.ascontiguousarray(keys), np.ascontiguousarray(offsets)


def _read_index_lines(idx_path: Path, rec_path: Path, size: int) -> np.ndarray:
    """The ``.idx`` as [records, 2] int64, line by line; RecordIOError naming the first bad line."""
    values = array.array("q")
    with open(idx_path) as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            fields = line.split("\t")
            try:
                key, offset = int(fields[0]), int(fields[1])
            except (IndexError, ValueError):
                raise RecordIOError(f"{idx_path}:{number}: expected 'key<TAB>offset', got {line!r}") from None
            if not 0 <= offset < size:
                raise RecordIOError(f"{idx_path}:{number}: record {key} at byte {offset} lies beyond the end "
                                    f"of {rec_path} ({size} bytes): the .rec is truncated or not this index's")
            try:
                values.extend((key, offset))
            except OverflowError:
                raise RecordIOError(f"{idx_path}:{number}: key {key} does not fit in 64 bits") from None
    return np.frombuffer(values, dtype=np.int64).reshape(-1, 2)


class RecordIOReader:
    """Random access to the records of a ``.rec`` through its ``.idx``; opens its own file handle
    (lazily, per process), so DataLoader workers and DDP ranks each read independently."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike):
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        for path, what in ((self.rec_path, "record file"), (self.idx_path, "index file")):
            if not path.is_file():
                raise RecordIOError(f"{what} {path} does not exist: pass the folder holding train.rec and train.idx")
        self.size = self.rec_path.stat().st_size
        # numpy, not a dict: 16 bytes a record, in two arrays whose pages forked DataLoader workers
        # share (a dict's int objects get copied page by page as reference counts change)
        self.record_keys, self.offsets = _read_index(self.idx_path, self.rec_path, self.size)
        self._handle = None
        self._pid = None

    def keys(self) -> np.ndarray:
        """The record keys, ascending (int64)."""
        return self.record_keys

    def __contains__(self, key: int) -> bool:
        return self._position(key) is not None

    def _position(self, key: int) -> int | None:
        position = int(np.searchsorted(self.record_keys, key))
        return position if position < len(self.record_keys) and self.record_keys[position] == key else None

    def offset(self, key: int) -> int:
        """The byte offset of record ``key`` in the ``.rec``."""
        position = self._position(key)
        if position is None:
            raise RecordIOError(f"{self.rec_path}: no record {key} in {self.idx_path}")
        return int(self.offsets[position])

    def _file(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open(self.rec_path, "rb"), os.getpid()
        return self._handle

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (parts joined)."""
        handle, offset, parts = self._file(), self.offset(key), []
        handle.seek(offset)
        while True:
            where = f"{self.rec_path} record {key} (byte {handle.tell()})"
            head = handle.read(8)
            if len(head) < 8:
                raise RecordIOError(f"{where}: the file ends inside the record header: it is truncated; re-copy it")
            magic, lrecord = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(f"{where}: bad magic 0x{magic:08x} (expected 0x{MAGIC:08x}): the file is "
                                    "corrupt here or the .idx belongs to another .rec")
            cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            part = handle.read(length)
            if len(part) < length:
                raise RecordIOError(f"{where}: the file ends {length - len(part)} bytes into the record: it is "
                                    "truncated; re-copy it")
            handle.seek(-length % 4, os.SEEK_CUR)
            parts.append(part)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            if cflag not in (1, 2) or (cflag == 2 and len(parts) == 1):
                raise RecordIOError(f"{where}: continuation flag {cflag} out of sequence: the file is corrupt")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self) -> dict:  # a pickled reader (DataLoader worker) opens its own handle
        return {**self.__dict__, "_handle": None, "_pid": None}


class RecordIOFaces:
    """An insightface RecordIO set with the interface of :class:`training.data.FaceFolder`:
    ``labels`` per image, ``classes``, ``load_rgb(i)``, ``path(i)`` (a ``train.rec#key`` name for
    messages), ``file_list_digest()`` (the index's sha256 and the record file's size)."""

    def __init__(self, root: str | os.PathLike, max_identities: int = 0):
        self.root = Path(root)
        self.reader = RecordIOReader(self.root / "train.rec", self.root / "train.idx")
        header = unpack(self.reader.read(0), f"{self.reader.rec_path} record 0")[0] if 0 in self.reader else None
        if header is not None and len(header) >= 2:  # insightface layout: labels from the identity ranges
            first_identity, end = int(header[0]), int(header[1])
            ranges = np.zeros((max(0, end - first_identity), 2), dtype=np.int64)
            for label, identity_key in enumerate(range(first_identity, end)):
                start, stop = (int(v) for v in unpack(self.reader.read(identity_key),
                                                      f"{self.reader.rec_path} record {identity_key}")[0][:2])
                if not 0 < start <= stop <= first_identity:
                    raise RecordIOError(f"{self.reader.rec_path} record {identity_key}: identity range {start}..{stop} "
                                        f"lies outside the images 1..{first_identity - 1}: the header records are corrupt")
                ranges[label] = start, stop
            counts = ranges[:, 1] - ranges[:, 0]
            labels = np.repeat(np.arange(len(ranges), dtype=np.int64), counts)
            # image j of identity c is key start_c + j: the identity's start plus the position in its run
            keys = np.repeat(ranges[:, 0] - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        else:  # images only: each record's own label
            keys = self.reader.keys()
            labels = np.fromiter((int(unpack(self.reader.read(k), f"{self.reader.rec_path} record {k}")[0][0])
                                  for k in keys), dtype=np.int64, count=len(keys))
        if max_identities:
            keep = labels < max_identities
            keys, labels = keys[keep], labels[keep]
        if not len(labels):
            raise RecordIOError(f"{self.root}: the record set holds no labelled images")
        # arrays, not lists: forked DataLoader workers share their pages
        self.keys, self.labels = np.asarray(keys, dtype=np.int64), labels
        self.classes = [str(c) for c in range(int(labels.max()) + 1)]
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labelled(self) -> np.ndarray:
        return np.arange(len(self.keys))

    def path(self, index: int) -> Path:
        return Path(f"{self.reader.rec_path}#{int(self.keys[index])}")

    def load_rgb(self, index: int) -> np.ndarray:
        key = int(self.keys[index])
        _, image = unpack(self.reader.read(key), f"{self.reader.rec_path} record {key}")
        decoded = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_COLOR) if image else None
        if decoded is None:
            raise RecordIOError(f"{self.reader.rec_path} record {key}: its image cannot be decoded (not a JPEG/PNG)")
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)

    def file_list_digest(self) -> str:
        digest = hashlib.sha256(self.reader.idx_path.read_bytes())
        digest.update(f"rec:{self.reader.size}:keys:{len(self.keys)}".encode())
        return digest.hexdigest()


def is_recordio_root(path: str | os.PathLike) -> bool:
    return (Path(path) / "train.rec").is_file() and (Path(path) / "train.idx").is_file()
