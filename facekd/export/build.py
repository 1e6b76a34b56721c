"""Export a student checkpoint to every requested format, gate each artifact on parity, write manifests.

Output folder::

    <out>/<format>-<precision>/model<suffix> + manifest.json     artifacts that passed (or could only be validated)
    <out>/rejected/<format>-<precision>/...                       below their parity bar, or broken after conversion
    <out>/golden/                                                 golden vectors for app-side tests (see golden.py)
    <out>/export_summary.json                                     one record per format × precision

One format failing never stops the others: its record says "failed" with a one-line reason. Rows
marked ``own_process`` (native runtimes that crashed beside the others in one process) convert and
run their parity in a spawned child, so even a crash of theirs fails that artifact only; those
children run beside the in-process conversions (``export.concurrent``).
"""
from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from tqdm import tqdm

from facekd.core.chatter import library_output
from facekd.core.data import BadImageError, FaceFolder
from facekd.core.host import usable_cores
from facekd.training.evaluate import student_embed_fn
from facekd.core.io import atomic_path, atomic_write_json, remove_stale_temp_files, sha256_file
from facekd.core.pairs import VerificationPairs
from facekd.core.preprocess import PreprocessSpec
from facekd.training.checkpoint import INT8_STUDENT, load_student
from facekd.core.verification import (EmbedFn, IdentitySetError, best_threshold, calibrate, embed_folder,
                                      embed_images, embed_once, embed_pairs, l2_normalise, pair_scores)

from .artifact import ArtifactIO
from .cost import onnx_cost, torch_cost
from .equalise import equalise_for_int8
from .errors import ExportError, FormatUnavailable
from .faces import FaceSet, evenly_spaced, image_name
from .formats import FORMATS, FormatRow, source_here, unknown_format
from .int8 import Int8Plan, int8_record
from .golden import write_golden, write_identification_fixture
from .host import cpu_features
from .manifest import Manifest, artifact_size, sha256_artifact
from .parity import INT8_CONVERSION_BAR, RUN_BATCH, GateResult, Parity, ParityReference, embed, gate, measure_parity
from .config import ExportConfig
from facekd.core.errors import one_line

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.operating_points import OperatingPoints

logger = logging.getLogger(__name__)

__all__ = ["ExportConfig", "ExportError", "ExportRecord", "export_checkpoint", "export_teacher",
           "plan_jobs", "split_format_requests"]

REJECTED = "rejected"
INT8_SEARCH_MARGIN = 0.003  # int8 layer searches aim this far above the int8 bar's worst_cos, on the calibration faces
GOLDEN = "golden"
SUMMARY = "export_summary.json"
MANIFEST = "manifest.json"


@dataclass
class ExportRecord:
    format: str
    precision: str
    status: str  # ok | rejected | unavailable | validated-structure-only | failed
    reason: str
    path: str | None = None  # artifact path relative to the output folder
    size_bytes: int | None = None
    parity: dict | None = None
    seconds: float | None = None  # conversion time

    def to_dict(self) -> dict:
        return asdict(self)


def split_format_requests(requests: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``["onnx", "tflite-int8", "tflite-fp16"]`` -> (formats, {format: precisions}); a bare
    format asks for all its precisions, so it wins over ``FORMAT-PRECISION`` entries of the same format."""
    names, precisions, whole = [], {}, set()
    for request in requests:
        name, _, precision = request.partition("-")
        if name not in FORMATS:
            raise ExportError(f"{unknown_format(name)} (a request is FORMAT or FORMAT-PRECISION, e.g. onnx-fp32)")
        names.append(name)
        if precision:  # checked against the format's precisions by plan_jobs
            precisions.setdefault(name, []).append(precision)
        else:
            whole.add(name)
    return list(dict.fromkeys(names)), {k: list(dict.fromkeys(v)) for k, v in precisions.items() if k not in whole}


def plan_jobs(config: ExportConfig) -> list[tuple[FormatRow, str, str | None]]:
    """(row, precision, unavailable reason) for every requested job; raise on requests that cannot work."""
    explicit = config.formats is not None
    names, requested = split_format_requests(config.formats) if explicit else (list(FORMATS), {})
    for name in list(config.precisions):
        if name not in FORMATS:
            raise ExportError(f"export.precisions: {unknown_format(name)}")
    precisions_of = {**requested, **config.precisions}
    for name, precisions in precisions_of.items():
        for precision in precisions:
            if precision not in FORMATS[name].precisions:
                offered = ", ".join(FORMATS[name].precisions)
                raise ExportError(f"format {name} has no precision {precision!r}: it offers {offered}")
    for name in dict.fromkeys(names):
        for precision in precisions_of.get(name) or FORMATS[name].precisions:
            if precision not in config.bars:
                raise ExportError(f"no parity bar for {name}-{precision}: set export.bars.{precision} "
                                  f"(bars given: {', '.join(sorted(config.bars)) or 'none'})")
    for setting in ("calib_count", "parity_count", "parity_pairs", "max_batch"):
        if getattr(config, setting) < 1:
            raise ExportError(f"export {setting} must be at least 1, got {getattr(config, setting)}")
    jobs = []
    for name in dict.fromkeys(names):
        row = FORMATS[name]
        reason = None if source_here(row) else row.unavailable_reason()  # with its source made here, the job runs
        if reason and explicit:
            raise ExportError(f"cannot export {name}: {reason}")
        jobs += [(row, precision, reason) for precision in precisions_of.get(name) or row.precisions]
    return jobs


def _pair_faces(pairs: VerificationPairs, count: int) -> tuple[FaceSet, np.ndarray, np.ndarray]:
    subset = pairs.subset(evenly_spaced(count, len(pairs)))
    names = tuple(
        f"{pairs.name}#{i}" if isinstance(image, np.ndarray) else image_name(image) for i, image in enumerate(subset.images)
    )
    try:
        images = tuple(subset.load_image(i) for i in range(len(subset.images)))
    except BadImageError as exc:
        raise ExportError(f"pairs {pairs.name}: {exc}") from None
    return FaceSet(names, images), subset.left, subset.right


def _threshold(embed_fn: EmbedFn, state: dict, pairs: VerificationPairs | None, progress: bool) -> tuple[float | None, str]:
    """The verification threshold: recomputed with the PyTorch model (``embed_fn``) on ``pairs``, else the checkpoint's."""
    if pairs is not None and len(pairs):
        embeddings = embed_pairs(embed_fn, pairs, progress=progress)
        threshold, accuracy = best_threshold(pair_scores(embeddings, pairs), pairs.same)
        return threshold, f"best accuracy ({accuracy:.4f}) of the PyTorch model on {len(pairs)} pairs of {pairs.name}"
    if state.get("threshold") is not None:
        return float(state["threshold"]), "checkpoint"
    return None, "none: no pairs given and the checkpoint has no threshold"


def _operating_points(embed_fn: EmbedFn, identities: FaceFolder, progress: bool) -> tuple[OperatingPoints | None, np.ndarray]:
    """The operating points of ``identities`` embedded by the PyTorch model (``embed_fn``; ``calibrate``; None,
    with a warning, when they support no FAR), and those embeddings."""
    embeddings = embed_folder(embed_fn, identities, progress=progress)
    source = (f"all pairs of {len(identities.classes)} identities ({len(identities)} faces) under {identities.root}, "
              "PyTorch model")
    try:
        return calibrate(embeddings, identities.labels, source, progress=progress), embeddings
    except IdentitySetError as exc:
        logger.warning("manifests without operating points (clients fall back to the best-accuracy threshold): %s", exc)
        return None, embeddings


@contextmanager
def _torch_threads(threads: int | None):
    """Run PyTorch with ``threads`` intra-op threads (unchanged when None), restoring the setting after."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _torch_embeddings(model: "nn.Module", inputs: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():  # channels-last input: as student_embed_fn
        return np.concatenate([model(torch.from_numpy(inputs[i : i + 64]).contiguous(memory_format=torch.channels_last)).numpy()
                               for i in range(0, len(inputs), 64)])


def _check_io(io: ArtifactIO, expected_input: list, embedding_size: int) -> None:
    """Raise when an artifact's I/O differs from what its manifest will promise."""
    problems = []
    quantized_input = "input_quantization" in io.details  # int8 input: fed as its manifest says
    quantized_output = "output_quantization" in io.details  # a full-integer model's int8 embedding, with its scale
    if (io.input_dtype != "float32" and not quantized_input) or (io.output_dtype != "float32" and not quantized_output):
        problems.append(f"dtypes {io.input_dtype}->{io.output_dtype}, expected float32->float32")
    if len(io.input_shape) != len(expected_input) or io.input_shape[1:] != expected_input[1:]:
        problems.append(f"input shape {io.input_shape}, expected {expected_input}")
    if io.output_shape and io.output_shape[-1] not in (None, embedding_size):
        problems.append(f"output shape {io.output_shape}, expected [N, {embedding_size}]")
    if problems:
        raise RuntimeError("artifact I/O mismatch: " + "; ".join(problems))


@dataclass
class _Run:
    """What every job of one export shares."""

    out_dir: Path
    config: ExportConfig
    model: "nn.Module"
    preprocess: PreprocessSpec
    calibration: FaceSet
    parity_faces: FaceSet
    reference: ParityReference
    threshold_source: str
    source: dict
    cost: dict  # {params, macs} of the model (export.cost), the same for every artifact
    operating_points: dict | None = None  # OperatingPoints.to_dict() of the PyTorch model, for every manifest
    int8_model: "nn.Module | None" = None  # what int8 converters quantise (int8-aware student or equalised copy; None: model)
    int8_preparation: dict = field(default_factory=dict)  # how that copy was made (manifest details of int8 artifacts)
    int8_plan: Int8Plan = field(default_factory=Int8Plan)  # what the int8 converters are asked for (export.int8)
    int8_twin: ParityReference | None = None  # the int8-aware student's simulated-int8 view of the parity faces
    parity_inputs: dict[str, np.ndarray] = field(default_factory=dict)  # layout -> inputs
    progress: bool = False  # progress bars of long conversions (the int8 layer searches)

    @property
    def int8_search_target(self) -> float | None:
        """Worst cosine the int8 converters' fallbacks aim at on the calibration faces: the int8
        bar's ``worst_cos`` plus ``INT8_SEARCH_MARGIN`` (other faces are gated); None when the bar
        does not bound the worst case — every layer stays int8, the fastest artifact."""
        bar = self.config.bars.get("int8")
        return None if bar is None or bar.worst_cos is None else min(1.0, bar.worst_cos + INT8_SEARCH_MARGIN)

    def model_for(self, precision: str) -> "nn.Module":
        return self.int8_model if precision == "int8" and self.int8_model is not None else self.model

    def inputs(self, layout: str) -> np.ndarray:
        if layout not in self.parity_inputs:
            self.parity_inputs[layout] = self.parity_faces.inputs(self.preprocess.with_layout(layout))
        return self.parity_inputs[layout]


def _artifact_embeddings(run: _Run, runner, path: Path, layout: str) -> np.ndarray:
    """``path`` run by ``runner`` on the parity faces."""
    runner.load(path, run.config.threads)
    batch_size = min(RUN_BATCH, run.config.max_batch)  # bounded-batch formats accept up to max_batch
    return embed(runner, run.inputs(layout), batch_size)


def _parity(run: _Run, runner, path: Path, layout: str) -> Parity:
    """Parity with PyTorch of ``path`` run by ``runner`` on the parity faces."""
    return measure_parity(_artifact_embeddings(run, runner, path, layout), run.reference)


@dataclass
class _SourceCheck:
    """A format's source model (``FormatRow.source``) made beside the artifact and gated here."""

    path: Path
    io: ArtifactIO
    parity: Parity
    verdict: GateResult
    facts: dict  # details.source of the manifest

    def statement(self) -> str:
        how, outcome = self.facts["checks"][0]["how"], "passed" if self.verdict.passed else "failed"
        return f"its source {self.path.name} was made here and {outcome} parity ({how}): {self.verdict.statement}"


def _check_source(run: _Run, row: FormatRow, precision: str, folder: Path) -> _SourceCheck:
    """Make ``row``'s source in ``folder``, check its I/O, and measure its parity in every way its
    format lists; the first gates it on the bar of ``precision``, the others are recorded."""
    source = row.source
    path = source.make(run.model_for(precision), precision, run.calibration, folder / source.file,
                       preprocess=run.preprocess, max_batch=run.config.max_batch, int8=run.int8_plan,
                       progress=run.progress)
    io = source.inspect(path)
    _check_io(io, run.preprocess.with_layout(row.layout).input_shape(None), run.model.embedding_size)
    checks = [(how, _parity(run, runner(), path, row.layout)) for how, runner in source.checks(precision)]
    verdict = gate(precision, checks[0][1], run.config.bars)
    facts = {"file": path.name, "sha256": sha256_artifact(path), "size_bytes": artifact_size(path), "gate": verdict.statement,
             "checks": [{"how": how, "parity": parity.to_dict()} for how, parity in checks], "cpu_isa": cpu_features()}
    return _SourceCheck(path, io, checks[0][1], verdict, facts)


@dataclass
class _Job:
    """One format × precision being made: where it goes and what its conversion left."""

    row: FormatRow
    precision: str
    folder: Path
    artifact: Path
    source: _SourceCheck | None = None
    not_built: str | None = None  # why the converter cannot run here (its source is still validated)
    int8_conversion: dict | None = None  # int8 of an int8-aware student: parity with its simulated-int8 twin
    seconds: float | None = None

    @property
    def name(self) -> str:
        return f"{self.row.name}-{self.precision}"


def _export_one(run: _Run, row: FormatRow, precision: str) -> ExportRecord:
    folder = run.out_dir / f"{row.name}-{precision}"
    for stale in (folder, run.out_dir / REJECTED / folder.name):
        if stale.exists():
            shutil.rmtree(stale)
    folder.mkdir(parents=True)
    job = _Job(row, precision, folder, folder / f"model{row.suffix}")
    failure = _convert(run, job)
    if failure is not None:
        return failure
    return _record(run, job, *_validate(run, job))


def _convert(run: _Run, job: _Job) -> ExportRecord | None:
    """Make the artifact (and the source it is built from); the record of a job that ends here, else None."""
    row, started = job.row, time.perf_counter()
    try:
        if row.source is not None:
            job.source = _check_source(run, row, job.precision, job.folder)
        if job.source is None or job.source.verdict.passed:
            with library_output():
                row.convert(run.model_for(job.precision), job.precision, run.calibration, job.artifact,
                            preprocess=run.preprocess, max_batch=run.config.max_batch,
                            int8=run.int8_plan, progress=run.progress)
    except FormatUnavailable as exc:
        if job.source is None:
            shutil.rmtree(job.folder)
            return ExportRecord(row.name, job.precision, "unavailable", str(exc))
        job.not_built = str(exc)  # the converter cannot run here; the source it would build from is kept, validated
    except Exception as exc:  # one format failing must not stop the others
        logger.warning("%s: conversion failed", job.name, exc_info=True)
        shutil.rmtree(job.folder)
        return ExportRecord(row.name, job.precision, "failed", one_line(exc), seconds=time.perf_counter() - started)
    job.seconds = time.perf_counter() - started
    return None


def _validate(run: _Run, job: _Job) -> tuple[Path, ArtifactIO | None, Parity | None, str, str]:
    """(the file the manifest describes, its I/O, parity with PyTorch, status, reason)."""
    source, artifact, row = job.source, job.artifact, job.row
    if source is not None and not artifact.exists():  # the manifest describes the source: rejected, or nothing built from it here
        missing = f"{artifact.name} not built"
        status = "unavailable" if source.verdict.passed else "rejected"
        reason = f"{job.not_built}: {missing}; {source.statement()}" if job.not_built else f"{missing}: {source.statement()}"
        return source.path, source.io, source.parity, status, reason
    io = parity = None
    try:
        io = row.inspect(artifact)
        _check_io(io, run.preprocess.with_layout(row.layout).input_shape(None), run.model.embedding_size)
        reason = row.validate_only()
        if reason:
            return artifact, io, None, "validated-structure-only", reason
        if job.precision == "int8" and run.int8_twin is not None:
            return _validate_int8_aware(run, job, io)
        with library_output():
            parity = _parity(run, row.runner(), artifact, row.layout)
        verdict = gate(job.precision, parity, run.config.bars)
        return artifact, io, parity, ("ok" if verdict.passed else "rejected"), verdict.statement
    except Exception as exc:  # an artifact that cannot be read back or run is not presented as good
        logger.warning("%s: validation failed", job.name, exc_info=True)
        return artifact, io, parity, "failed", one_line(exc)


def _validate_int8_aware(run: _Run, job: _Job, io: ArtifactIO) -> tuple[Path, ArtifactIO, Parity, str, str]:
    """An int8 artifact of the int8-aware student: gated on conversion fidelity (against its
    simulated-int8 twin, bar ``int8_conversion``); its parity with the float student (what int8
    costs) is recorded, not gated here: accuracy is what the bench measures."""
    with library_output():
        embeddings = _artifact_embeddings(run, job.row.runner(), job.artifact, job.row.layout)
    conversion, price = measure_parity(embeddings, run.int8_twin), measure_parity(embeddings, run.reference)
    job.int8_conversion = conversion.to_dict()
    verdict = gate(INT8_CONVERSION_BAR, conversion, run.config.bars)
    statement = (f"{verdict.statement} (against its simulated-int8 twin); against the float student worst_cos "
                 f"{price.worst_cos:.4f}, flip_rate {price.flip_rate if price.flip_rate is not None else 'n/a'}")
    return job.artifact, io, price, ("ok" if verdict.passed else "rejected"), statement


def _record(run: _Run, job: _Job, artifact: Path, io: ArtifactIO | None, parity: Parity | None, status: str,
            reason: str) -> ExportRecord:
    """Write the manifest (a rejected or failed job moves under ``rejected/`` first) and return the record."""
    row, precision, folder, source = job.row, job.precision, job.folder, job.source
    if status in ("rejected", "failed"):
        rejected = run.out_dir / REJECTED / folder.name
        rejected.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(rejected))
        folder, artifact = rejected, rejected / artifact.name
    details = {**({} if io is None else io.details), "model": {**run.cost, "role": "student"},
               **(run.int8_preparation if precision == "int8" else {}),
               **({} if source is None else {"source": source.facts if artifact.name == source.path.name
                                             else {**source.facts, "details": source.io.details}})}
    manifest = Manifest(
        format=row.name, precision=precision, status=status, reason=reason, file=artifact.name,
        sha256=sha256_artifact(artifact), size_bytes=artifact_size(artifact),
        input={} if io is None else {"name": io.input_name, "shape": io.input_shape, "layout": row.layout, "dtype": io.input_dtype,
                                     **({"quantization": io.details["input_quantization"]}
                                        if "input_quantization" in io.details else {})},
        output={} if io is None else {"name": io.output_name, "shape": io.output_shape, "dtype": io.output_dtype,
                                      **({"quantization": io.details["output_quantization"]}
                                         if "output_quantization" in io.details else {})},
        preprocess=run.preprocess.with_layout(row.layout).to_dict(), embedding_size=run.model.embedding_size,
        threshold=run.reference.threshold, threshold_source=run.threshold_source,
        operating_points=run.operating_points, calibration=run.calibration.describe() if precision in row.calibrated else None,
        parity=None if parity is None else parity.to_dict(), converter_versions=row.versions(),
        quantization=row.precisions[precision], source=run.source,
        int8=int8_record(details, run.int8_plan, job.int8_conversion).to_dict() if precision == "int8" else None,
        details=details,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest.save(folder / MANIFEST)
    return ExportRecord(row.name, precision, status, reason, path=artifact.relative_to(run.out_dir).as_posix(),
                        size_bytes=manifest.size_bytes, parity=manifest.parity, seconds=job.seconds)


def _export_in_child(run: _Run, row: FormatRow, precision: str) -> ExportRecord:
    """``_export_one`` in a spawned process; when that process dies instead of answering, the
    artifact fails with how it died and whatever it half-wrote is removed."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_export_one_and_send, args=(run, row, precision, send))
    started = time.perf_counter()
    child.start()
    send.close()
    try:
        try:
            answer = receive.recv()
        except EOFError:  # the child closed its end without answering: it died
            answer = None
        child.join()
    finally:
        if child.is_alive():
            child.terminate()
            child.join()
    if answer is not None:
        return ExportRecord(**json.loads(answer))
    code = child.exitcode
    how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    shutil.rmtree(run.out_dir / f"{row.name}-{precision}", ignore_errors=True)
    return ExportRecord(row.name, precision, "failed", f"its converter's process died ({how}); nothing of it was kept",
                        seconds=time.perf_counter() - started)


def _export_one_and_send(run: _Run, row: FormatRow, precision: str, send) -> None:
    """Child side of ``_export_in_child``: the record goes back as JSON."""
    with _torch_threads(run.config.threads):
        send.send(json.dumps(_export_one(run, row, precision).to_dict()))
    send.close()


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ExportConfig | None = None,
    calibration_images: Sequence[str | os.PathLike] | FaceSet = (),
    parity_images: Sequence[str | os.PathLike] = (),
    pairs: VerificationPairs | None = None,
    progress: bool = True,
    teacher: tuple[str | os.PathLike, PreprocessSpec] | None = None,
    identities: FaceFolder | None = None,
) -> list[ExportRecord]:
    """Export ``checkpoint_path`` into ``out_dir``; returns one record per format × precision.

    Calibration faces should come from training identities, parity faces, ``pairs`` and ``identities`` (all their faces: the
    manifests' operating points) from validation identities. ``teacher``
    (ONNX path, preprocessing) is put beside the artifacts when ``config.teacher`` is on. Raises
    ExportError (or CheckpointError) for requests that cannot work.
    """
    config = config or ExportConfig()
    jobs = plan_jobs(config)
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    model, preprocess, state = load_student(checkpoint_path)
    calibration = (calibration_images if isinstance(calibration_images, FaceSet)
                   else FaceSet.from_paths(calibration_images, config.calib_count, "calibration"))
    parity_faces, left, right = _parity_faces(parity_images, pairs, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)
    golden_candidates = [image for image in (pairs.images if pairs is not None else []) if not isinstance(image, np.ndarray)]
    embed_fn = embed_once(student_embed_fn(model, preprocess))  # pairs, parity faces and identities overlap
    with _torch_threads(config.threads):
        threshold, threshold_source = _threshold(embed_fn, state, pairs, progress)
        reference = ParityReference(embed_images(embed_fn, len(parity_faces), parity_faces.images.__getitem__),
                                    left, right, threshold)
        run = _Run(
            out_dir=out_dir, config=config, model=model, preprocess=preprocess, calibration=calibration,
            parity_faces=parity_faces, reference=reference, threshold_source=threshold_source,
            source={"checkpoint": checkpoint_path.name, "sha256": sha256_file(checkpoint_path), "arch": state.get("arch")},
            cost=torch_cost(model, preprocess.size), progress=progress,
        )
        points, identity_embeddings = (None, None) if identities is None else _operating_points(
            embed_fn, identities, progress)
        run.operating_points = None if points is None else points.to_dict()
        if any(precision == "int8" and not unavailable for _, precision, unavailable in jobs):
            _prepare_int8(run, checkpoint_path)
        if config.golden:
            _write_golden(run, golden_candidates + list(parity_images), threshold, identities, identity_embeddings, points)
        records = _export_jobs(run, jobs)
    if teacher is not None and config.teacher:
        records.append(export_teacher(*teacher, out_dir))
    atomic_write_json(out_dir / SUMMARY, [r.to_dict() for r in records])
    return records


def _parity_faces(parity_images: Sequence[str | os.PathLike], pairs: VerificationPairs | None,
                  config: ExportConfig) -> tuple[FaceSet, np.ndarray, np.ndarray]:
    """The faces every artifact is compared with PyTorch on, and the pairs among them (left, right) for flips."""
    faces = FaceSet.from_paths(parity_images, config.parity_count, "parity") if parity_images else FaceSet((), ())
    left = right = np.zeros(0, dtype=np.int64)
    if pairs is not None and len(pairs):
        pair_faces, left, right = _pair_faces(pairs, config.parity_pairs)
        left, right = left + len(faces), right + len(faces)
        faces = faces + pair_faces
    if not len(faces):
        raise ExportError("no parity faces: pass parity images and/or verification pairs of real aligned faces")
    return faces, left, right


def _write_golden(run: _Run, candidates: list, threshold: float | None, identities: FaceFolder | None,
                  identity_embeddings: np.ndarray | None, points) -> None:
    """The apps' golden vectors and, with operating points, their open-set identification fixture."""
    try:
        write_golden(run.out_dir / GOLDEN, run.model, run.preprocess, candidates, threshold)
        if points is not None:
            write_identification_fixture(run.out_dir / GOLDEN / "identification.json", identity_embeddings,
                                         identities.labels, identities.classes, points)
    except (ExportError, BadImageError) as exc:
        raise ExportError(f"golden vectors for the app tests cannot be written: {exc} "
                          "(or set export.golden=false to export without them)") from None


def _export_jobs(run: _Run, jobs: list) -> list[ExportRecord]:
    """Every job; the summary is rewritten after each, so progress survives an interruption. With
    ``export.concurrent``, the jobs of ``own_process`` rows run one after another in a second lane,
    beside the in-process ones: a conversion mostly keeps one core busy."""
    done: dict[int, ExportRecord] = {}
    lock = threading.Lock()
    bar = tqdm(total=len(jobs), desc="export", unit="artifact", disable=not run.progress)

    def run_job(index: int, run: _Run) -> None:
        row, precision, unavailable = jobs[index]
        if unavailable:
            record = ExportRecord(row.name, precision, "unavailable", unavailable)
        else:
            record = (_export_in_child if row.own_process else _export_one)(run, row, precision)
        logger.info("%s-%s: %s %s", row.name, precision, record.status, record.reason)
        with lock:
            done[index] = record
            atomic_write_json(run.out_dir / SUMMARY, [done[i].to_dict() for i in sorted(done)])
            bar.set_postfix_str(f"{row.name}-{precision}")
            bar.update()

    second = [i for i, (row, _, unavailable) in enumerate(jobs) if row.own_process and not unavailable]
    second = second if run.config.concurrent and usable_cores() > 1 else []
    for layout in {row.layout for row, _, _ in jobs}:
        run.inputs(layout)  # cached once, for both lanes
    if second:  # each lane on its half of the cores: threads spinning on one core are time lost to the other lane
        run = replace(run, config=replace(run.config, threads=run.config.threads or usable_cores() // 2))
    lane = ThreadPoolExecutor(max_workers=1)
    try:
        lane_run = copy.deepcopy(run) if second else run  # its children are sent this copy, which no conversion touches
        pending = [lane.submit(run_job, index, lane_run) for index in second]
        with _torch_threads(run.config.threads):
            for index in range(len(jobs)):
                if index not in second:
                    run_job(index, run)
        for future in pending:
            future.result()
    finally:
        lane.shutdown(cancel_futures=True)  # interrupted: the lane's running job ends, the rest never start
        bar.close()
    return [done[i] for i in range(len(jobs))]


def _prepare_int8(run: _Run, checkpoint_path: Path) -> None:
    """What every int8 converter quantises and is asked for (``export.int8.Int8Plan``): the
    int8-aware student beside the checkpoint (``student_int8.pt``), full-integer, with its
    simulated-int8 twin's view of the parity faces to gate conversion on; else the student itself,
    its channel ranges equalised on the calibration faces (``export.int8_equalise``)."""
    aware_path = checkpoint_path.with_name(INT8_STUDENT)
    if checkpoint_path.name != INT8_STUDENT and aware_path.is_file():
        model, _, state = load_student(aware_path)
        if asdict(model.arch) != asdict(run.model.arch):
            raise ExportError(f"{aware_path} holds another student than {checkpoint_path.name}: retrain both in one run")
        run.int8_model, run.int8_plan = model, Int8Plan(int8_aware=state.get("int8_aware") or {"epochs": None},
                                                        integer_input=run.config.int8_input)
        run.int8_preparation["int8_student"] = {"checkpoint": aware_path.name, "sha256": sha256_file(aware_path)}
        run.int8_twin = _twin_reference(run, model)
        return
    run.int8_plan = Int8Plan(search_target=run.int8_search_target, integer_input=run.config.int8_input,
                             static_first=run.config.int8_static_first)
    if run.config.int8_equalise:
        model, run.int8_preparation["int8_equalisation"] = equalise_for_int8(
            run.model, run.calibration.inputs(run.preprocess.with_layout("NCHW")))
        run.int8_model = model


def _twin_reference(run: _Run, model: "nn.Module") -> ParityReference:
    """The parity faces through ``model`` under simulated int8 (``training.quant_aware.int8_twin``)."""
    import torch

    from facekd.training.quant_aware import int8_twin

    twin = int8_twin(model, torch.from_numpy(run.calibration.inputs(run.preprocess.with_layout("NCHW"))))
    return replace(run.reference, embeddings=l2_normalise(_torch_embeddings(twin, run.inputs("NCHW"))))


TEACHER_ARTIFACT = "teacher-onnx-fp32"


def export_teacher(teacher_path: str | os.PathLike, preprocess: PreprocessSpec, out_dir: str | os.PathLike) -> ExportRecord:
    """Put the teacher's float network (``training.onnx_graph.plain_graph``: what the teacher cache runs)
    beside the student's artifacts (``teacher-onnx-fp32/``) with a manifest whose ``details.model.role``
    is "teacher", so the benchmark measures it with the same workers: what the student kept and what it paid."""
    import onnx

    from facekd.training.onnx_graph import plain_graph

    teacher_path = Path(teacher_path)
    folder = Path(out_dir) / TEACHER_ARTIFACT
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    artifact = folder / "model.onnx"
    model = onnx.load(str(teacher_path))
    plain_graph(model)
    with atomic_path(artifact) as tmp:
        tmp.write_bytes(model.SerializeToString())
    row = FORMATS["onnx"]
    io = row.inspect(artifact)
    spec = preprocess.with_layout("NCHW")
    embedding_size = io.output_shape[-1] if io.output_shape and io.output_shape[-1] else 0
    manifest = Manifest(
        format="onnx", precision="fp32", status="ok", reason="the teacher, measured for comparison",
        file=artifact.name, sha256=sha256_artifact(artifact), size_bytes=artifact_size(artifact),
        input={"name": io.input_name, "shape": io.input_shape, "layout": "NCHW", "dtype": io.input_dtype},
        output={"name": io.output_name, "shape": io.output_shape, "dtype": io.output_dtype},
        preprocess=spec.to_dict(), embedding_size=int(embedding_size), threshold=None,
        threshold_source="none: the bench picks the teacher's best threshold on the pairs", calibration=None,
        parity=None, converter_versions={}, quantization="the teacher's file as float: unused inputs dropped, quantised "
        "weights dequantised, PRelus as Max(x, x·a) (exact)",
        source={"teacher": teacher_path.name, "sha256": sha256_file(teacher_path)},
        details={**io.details, "model": {**onnx_cost(artifact), "role": "teacher"}},
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest.save(folder / MANIFEST)
    return ExportRecord("teacher-onnx", "fp32", "ok", manifest.reason, path=artifact.relative_to(out_dir).as_posix(),
                        size_bytes=manifest.size_bytes)

