"""``facekd bench``: accuracy and latency of every exported artifact on one target.

For each artifact folder of an export run (``<format>-<precision>/{model<suffix>, manifest.json}``
and ``rejected/...``) and each runtime that can run its format:

1. refuse what must not be measured: rejected by export -> ``rejected`` row; model file whose
   sha256 differs from its manifest -> ``failed`` row "sha256 mismatch"; format that cannot run
   on the target (CoreML off macOS, TensorRT not installed, ...) -> ``unavailable`` row;
2. per (threads, batch): a fresh worker process loads the artifact (``init_ms``), times the
   first run, warms up and times runs (:mod:`runtime_bench.latency`), reports its peak RSS;
3. once per artifact × runtime the worker with the most threads embeds every pair image (workers
   run most threads first; rows keep the configured order); the parent scores the pairs
   (10-fold accuracy, AUC, TAR@FAR via :mod:`training.verification`) and compares with the
   torch-fp32 reference: mean/worst cosine per image and the decision-flip rate at the
   manifest threshold;
4. with ``bench.suites``, the same worker also embeds every benchmark set (insightface ``.bin``,
   LFW pairs files), scored by the function ``facekd eval --sets`` uses
   (:func:`facekd.core.verification.evaluate`), with or without flip-test (``bench.flip_test``);
5. with ``bench.identities`` (by default the run's val identities), it embeds every face of those
   identities: all genuine vs all impostor pairs (TAR at FAR 1e-3..1e-5, EER), rank-1, open-set
   FNIR at ``bench.fpir`` for a gallery of ``bench.gallery_size``, and the share of strangers the
   manifest's operating-point rule lets match (:func:`training.verification.measure_identities`).

Images are preprocessed here, in the parent, with each manifest's PreprocessSpec and input
layout, and travel to workers as .npy files, so a worker needs no OpenCV. A worker that crashes
or hangs becomes a ``failed`` row with its exit code and last stderr line; the rest goes on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from tqdm import tqdm

from facekd.export.formats import FORMATS, unknown_format
from facekd.export.manifest import Manifest, ManifestError, verify_artifact
from facekd.core.io import sha256_file
from facekd.core.pairs import VerificationPairs, read_verification_set
from facekd.core.preprocess import PreprocessSpec
from facekd.core.verification import (EmbedFn, VerificationResult, embed_folder, embed_images, embed_once, evaluate,
                                      evaluate_scores, l2_normalise, measure_identities, pair_scores)

from .accelerated import ACCELERATED_RUNTIMES, runtime_options
from .client import WorkerClient, WorkerDied, WorkerError
from .config import REFERENCE_ARTIFACT, BenchConfig, BenchError, RuntimeSpec
from .latency import disturbance, summarize
from .results import BenchResult, ResultSchemaError, Row, load_result, save_result
from .targets import AdbTarget, BenchmarkOutputError, LocalTarget, Target, TargetError, target_from_dict
from facekd.core.errors import InputError

if TYPE_CHECKING:
    from facekd.core.data import FaceFolder

logger = logging.getLogger(__name__)

DEFAULT_RUNTIME = "default"
SUITE_CHUNK = 256  # images per worker request while embedding a benchmark set (~38 MB of float32 at 112²)
PROFILED_OPS_KEPT = 10  # slowest ops kept per row from its runtime's profile


def make_targets(config: BenchConfig) -> list[Target]:
    return [target_from_dict(spec) for spec in config.targets]


def accuracy_entry(verification: VerificationResult) -> dict:
    """A result row's accuracy section from a verification result."""
    return {"acc": verification.accuracy, "std": verification.accuracy_std, "tar_at_far": verification.tar_at_far,
            "auc": verification.auc, "threshold": verification.threshold}


def subset_pairs(pairs: VerificationPairs, pairs_per_fold: int | None) -> VerificationPairs:
    """Per fold, the first ⌈n/2⌉ same and ⌊n/2⌋ different pairs (all pairs when ``n`` is None)."""
    if pairs_per_fold is None:
        return pairs
    chosen = []
    for fold in np.unique(pairs.folds):
        in_fold = pairs.folds == fold
        chosen.extend(np.flatnonzero(in_fold & pairs.same)[:(pairs_per_fold + 1) // 2])
        chosen.extend(np.flatnonzero(in_fold & ~pairs.same)[:pairs_per_fold // 2])
    return pairs.subset(np.sort(np.asarray(chosen, dtype=np.int64)))


@dataclass
class Artifact:
    """One artifact folder of an export run and its manifest (``None`` if unreadable)."""

    name: str
    folder: Path
    manifest_path: Path
    manifest: Manifest | None
    problem: str | None = None
    rejected: bool = False

    @property
    def format(self) -> str:
        return self.manifest.format if self.manifest else self.name.rsplit("-", 1)[0]

    @property
    def precision(self) -> str:
        return self.manifest.precision if self.manifest else self.name.rsplit("-", 1)[-1]

    @property
    def model_path(self) -> Path:
        return self.manifest.artifact_path(self.manifest_path)

    def fixed_batch(self) -> int | None:
        """The batch size the artifact is fixed to, or None when its batch dimension is dynamic."""
        first = list(self.manifest.input["shape"])[0]
        return first if isinstance(first, int) and first > 0 else None

    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.manifest.preprocess).with_layout(self.manifest.input["layout"])

    def model(self) -> dict | None:
        """{params, macs, role} recorded by export (None for manifests written before it was)."""
        model = self.manifest.details.get("model") if self.manifest else None
        return dict(model) if isinstance(model, dict) and {"params", "macs", "role"} <= set(model) else None

    @property
    def is_teacher(self) -> bool:
        return (self.model() or {}).get("role") == "teacher"


def export_only_rows(export_dir: Path, measured: set[str]) -> list[Row]:
    """Rows for formats the export could not produce (e.g. TensorRT without TensorRT): they have
    no artifact folder, only a record in export_summary.json, and must still show up with why."""
    summary = Path(export_dir) / "export_summary.json"
    if not summary.exists():
        return []
    rows = []
    for record in json.loads(summary.read_text()):
        name = f"{record['format']}-{record['precision']}"
        if name in measured or record["status"] not in ("unavailable", "failed"):
            continue
        rows.append(Row(artifact=name, format=record["format"], precision=record["precision"], runtime="default",
                        status=record["status"], reason=f"export: {record['reason']}"))
    return rows


def integrity_problem(artifact: Artifact) -> str | None:
    """Why the artifact file must not be measured (missing, or sha256 differs from its manifest)."""
    if not artifact.model_path.exists():
        return f"artifact {artifact.model_path.name} is missing: re-run `facekd export`"
    try:
        verify_artifact(artifact.manifest_path)
    except ManifestError as exc:
        return f"sha256 mismatch: {exc}"
    return None


def host_problem(artifact: Artifact, system: str | None) -> str | None:
    """Why the target's OS cannot run the format at all (from the format table's ``host``)."""
    row = FORMATS.get(artifact.format)
    if row is None:
        return unknown_format(artifact.format)
    if row.host == "macOS" and system != "Darwin":
        validated = artifact.manifest.status == "validated-structure-only"
        return ("structure validated; " if validated else "") + "parity/latency need macOS"
    return None


def discover_artifacts(export_dir: str | os.PathLike, only: list[str] | None = None,
                       reference: str = REFERENCE_ARTIFACT) -> list[Artifact]:
    """Artifact folders of an export run (``rejected/`` included), the reference first.

    ``only`` keeps the named folders (``onnx-int8``) or formats (``onnx``); the reference is
    always kept, since parity is measured against it.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise BenchError(f"export folder {export_dir} does not exist: run `facekd export` first or pass its --out folder")
    found = [(path, False) for path in sorted(export_dir.glob("*/manifest.json")) if path.parent.name != "rejected"]
    found += [(path, True) for path in sorted((export_dir / "rejected").glob("*/manifest.json"))]
    artifacts = []
    for manifest_path, rejected in found:
        name = manifest_path.parent.name
        if only is not None and name != reference and name not in only and name.rsplit("-", 1)[0] not in only:
            continue
        try:
            artifacts.append(Artifact(name, manifest_path.parent, manifest_path, Manifest.load(manifest_path), rejected=rejected))
        except ManifestError as exc:  # unreadable, old schema or incomplete
            artifacts.append(Artifact(name, manifest_path.parent, manifest_path, None, problem=str(exc), rejected=rejected))
    if not artifacts:
        raise BenchError(f"no artifacts (<format>-<precision>/manifest.json) under {export_dir}: run `facekd export` first")
    return sorted(artifacts, key=lambda a: (a.name != reference, a.rejected, a.name))


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Bench:
    """State of one run_bench call: inputs made once, the reference embeddings, the rows."""

    def __init__(self, target: Target, config: BenchConfig, pairs: VerificationPairs, workdir: Path, progress: bool,
                 suites: list[VerificationPairs] = (), identities: "FaceFolder | None" = None):
        self.target, self.config, self.pairs, self.workdir = target, config, pairs, workdir
        self.suites = list(suites)
        self.identities = identities
        self.progress = progress
        self.plan = config.timing
        self.cores: int | None = None
        self.system: str | None = None
        self.accelerators: list[str] = []
        self._images: list[np.ndarray] | None = None
        self._inputs: dict[str, Path] = {}
        self.reference: np.ndarray | None = None
        self.reference_scores: np.ndarray | None = None
        self.reference_threshold: float | None = None

    # ----- inputs -------------------------------------------------------------------------
    def images(self) -> list[np.ndarray]:
        if self._images is None:
            self._images = [self.pairs.load_image(i) for i in
                            tqdm(range(len(self.pairs.images)), desc="reading pair images", unit="img",
                                 disable=not self.progress, leave=False)]
        return self._images

    def inputs(self, artifact: Artifact) -> Path:
        """Every pair image preprocessed for ``artifact`` as one float32 .npy (cached per spec)."""
        spec = artifact.preprocess()
        key = _fingerprint(spec.to_dict())
        if key not in self._inputs:
            array = np.concatenate([spec.apply(image) for image in self.images()])
            path = self.workdir / f"inputs-{key}.npy"
            np.save(path, array)
            self._inputs[key] = path
        return self._inputs[key]

    def batch_input(self, artifact: Artifact, batch: int) -> Path:
        """The first ``batch`` preprocessed images (repeated if there are fewer) as one .npy."""
        path = self.workdir / f"{self.inputs(artifact).stem}-batch{batch}.npy"
        if not path.exists():
            array = np.load(self.inputs(artifact), mmap_mode="r")
            repeats = -(-batch // len(array))
            np.save(path, np.concatenate([array] * repeats)[:batch])
        return path

    # ----- rows ---------------------------------------------------------------------------
    def base_row(self, artifact: Artifact, runtime: str, threads: int | None = None, batch: int | None = None) -> Row:
        manifest_sha = sha256_file(artifact.manifest_path) if artifact.manifest_path.is_file() else None
        size = artifact.manifest.size_bytes if artifact.manifest else None
        return Row(artifact=artifact.name, format=artifact.format, precision=artifact.precision, runtime=runtime,
                   status="ok", manifest_sha256=manifest_sha, size_bytes=size, threads=threads, batch=batch,
                   model=artifact.model(), int8_scheme=artifact.manifest.int8_scheme() if artifact.manifest else None)

    def refusal(self, artifact: Artifact) -> Row | None:
        """The row for an artifact that must not be measured, or None when it may be.

        Export's own verdicts come first (rejected by the parity gate, unavailable or failed at
        conversion); then the file must exist and match its manifest's sha256.
        """
        row = self.base_row(artifact, DEFAULT_RUNTIME)
        if artifact.problem:
            return self._status(row, "failed", artifact.problem)
        status, reason = artifact.manifest.status, artifact.manifest.reason
        if status in ("unavailable", "failed"):
            return self._status(row, status, reason or f"export reported {status}")
        if artifact.rejected or status == "rejected":
            return self._status(row, "rejected", reason or "rejected by export")
        problem = integrity_problem(artifact)
        return self._status(row, "failed", problem) if problem else None

    @staticmethod
    def _status(row: Row, status: str, reason: str) -> Row:
        row.status, row.reason = status, reason
        return row

    def fill_latency(self, row: Row, init_ms: float | None, timing: dict, batch: int) -> None:
        stats = summarize(timing["times_ms"], batch, init_ms=init_ms, first_ms=timing.get("first_ms"))
        row.latency = {**stats.to_dict(), "load_before": timing.get("load_before"), "load_after": timing.get("load_after"),
                       "other_cpu_cores": timing.get("other_cpu_cores")}
        row.memory = {"peak_rss_mb": timing.get("peak_rss_mb")}
        reason = disturbance(timing.get("load_before"), timing.get("load_after"), self.cores, stats.p50, stats.p99,
                             timing.get("other_cpu_cores"))
        row.disturbed, row.disturbed_reason = reason is not None, reason

    # ----- accuracy and parity ------------------------------------------------------------
    def quality(self, embeddings: np.ndarray, artifact: Artifact, is_reference: bool) -> tuple[dict, dict | None]:
        """(accuracy, parity vs the reference) of raw embeddings ``e`` of every pair image.

        Parity against the reference embeddings ``r`` (both L2-normalised): ``mean_cos`` and
        ``worst_cos`` are the mean and minimum over images of ``e_i · r_i``; ``flip_rate`` is the
        share of pairs ``k`` with ``[s_k >= t] != [s_k^ref >= t]`` for pair cosines ``s`` at the
        manifest threshold ``t`` (the reference's best threshold on these pairs if it has none).
        """
        expected = artifact.manifest.embedding_size
        if embeddings.shape[0] != len(self.pairs.images) or embeddings.shape[1] != expected:
            raise InputError(f"embeddings shaped {list(embeddings.shape)}, expected "
                             f"[{len(self.pairs.images)}, {expected}]")
        normalised = l2_normalise(embeddings)
        scores = pair_scores(normalised, self.pairs)
        verification = evaluate_scores(scores, self.pairs.same, self.pairs.folds)
        accuracy = accuracy_entry(verification)
        if is_reference:
            self.reference, self.reference_scores = normalised, scores
            self.reference_threshold = verification.threshold
        if self.reference is None or artifact.is_teacher:  # the teacher's embeddings live in another space
            return accuracy, None
        cosines = np.sum(normalised * self.reference, axis=1)
        threshold = artifact.manifest.threshold
        threshold = self.reference_threshold if threshold is None else float(threshold)
        flips = (scores >= threshold) != (self.reference_scores >= threshold)
        parity = {"mean_cos": float(cosines.mean()), "worst_cos": float(cosines.min()), "flip_rate": float(flips.mean())}
        return accuracy, parity

    # ----- measuring ----------------------------------------------------------------------
    def device_info(self, probe: bool = False) -> dict:
        """The target's facts and current load (asks a fresh worker, or adb, on the target); with
        ``probe`` also which accelerated runtimes its default interpreter can use."""
        if isinstance(self.target, AdbTarget):
            host = self.target.device_info()
        else:
            with self.target.start_worker(None, timeout_s=self.config.worker_timeout_s) as worker:
                host = worker.hello["host"]
                if probe and self.config.accelerators:
                    try:
                        self.accelerators = worker.request("probe")["accelerators"]
                    except WorkerError as exc:
                        logger.warning("accelerator probe failed, measuring without accelerators: %s", exc)
                if probe:
                    host = {**host, "measured_gmacs": self.measure_ceilings(worker)}
        self.cores, self.system = host.get("cores"), host.get("system")
        return {"name": host.get("name") or self.target.name, "cpu": host.get("cpu"), "cores": host.get("cores"),
                "isa": host.get("isa"), "peak_gmacs": host.get("peak_gmacs"),
                "measured_gmacs": host.get("measured_gmacs"), "os": host.get("os"),
                "python": host.get("python"), "load_before": host.get("load"), "load_after": None}

    @staticmethod
    def measure_ceilings(worker: WorkerClient) -> dict | None:
        """The host's achieved GEMM ceilings (None where the worker cannot measure them)."""
        try:
            return worker.request("ceilings")["ceilings"]
        except (WorkerError, KeyError) as exc:
            logger.warning("GEMM ceilings not measured: %s", exc)
            return None

    def runtimes_for(self, artifact: Artifact) -> list[RuntimeSpec]:
        """The format table's runner, the accelerated variants the target has, then configured extras."""
        python = self.config.python_executables.get(artifact.name) or self.config.python_executables.get(artifact.format)
        runtimes = [RuntimeSpec(DEFAULT_RUNTIME, [artifact.format], python_executable=python)]
        for name in self.accelerators:
            fmt, runner = ACCELERATED_RUNTIMES[name]
            if fmt == artifact.format:
                runtimes.append(RuntimeSpec(name, [fmt], runner=runner, python_executable=python,
                                            options=runtime_options(name, artifact.precision)))
        runtimes += [r for r in self.config.runtimes if {artifact.format, artifact.name} & set(r.formats)]
        return runtimes

    def measure(self, artifact: Artifact, unreachable: str | None) -> list[Row]:
        refused = self.refusal(artifact)
        if refused:
            return [refused]
        if unreachable:
            return [self._status(self.base_row(artifact, DEFAULT_RUNTIME), "unavailable", unreachable)]
        host_reason = host_problem(artifact, self.system)
        if host_reason:
            return [self._status(self.base_row(artifact, DEFAULT_RUNTIME), "unavailable", host_reason)]
        if isinstance(self.target, AdbTarget):
            return list(self.measure_with_benchmark_binary(artifact))
        return [row for runtime in self.runtimes_for(artifact) for row in self.measure_with_worker(artifact, runtime)]

    def configurations(self) -> Iterator[tuple[int, int]]:
        for threads in self.config.threads:
            for batch in self.config.batch:
                yield threads, batch

    def measure_with_worker(self, artifact: Artifact, runtime: RuntimeSpec) -> Iterator[Row]:
        """Rows of one artifact × runtime, in the configured order: a fresh worker per (threads, batch).
        Workers run with the most threads first, and the first of them that times successfully also
        embeds every face (accuracy, parity, suites, identities: one set for every row of the
        artifact), so that embedding uses every thread the bench was asked for."""
        is_reference = artifact.name == self.config.reference and runtime.name == DEFAULT_RUNTIME
        configurations = list(self.configurations())
        rows: dict[tuple[int, int], Row] = {}
        quality: tuple[dict, dict | None, dict | None, dict | None] | None = None
        quality_failure: str | None = None
        for threads, batch in sorted(configurations, key=lambda config: -config[0]):
            row = self.base_row(artifact, runtime.name, threads, batch)
            fixed = artifact.fixed_batch()
            if fixed and batch != fixed:
                rows[threads, batch] = self._status(row, "unavailable", f"artifact takes batch {fixed} only (fixed input shape)")
                continue
            embed = quality is None and quality_failure is None
            answer = self._run_worker(row, artifact, runtime, profile=(threads, batch) == configurations[0],
                                      embed=embed, is_reference=is_reference)
            if answer == "unavailable":
                yield self._status(self.base_row(artifact, runtime.name), "unavailable", row.reason)
                return
            if embed and isinstance(answer, tuple):
                quality = answer
            elif embed and answer:
                quality_failure = answer
            rows[threads, batch] = row
        for config in configurations:
            row = rows[config]
            if quality is not None and row.status == "ok":
                row.accuracy, row.parity, row.suites, row.identities = quality
            elif row.status == "ok" and quality_failure:
                self._status(row, "failed", quality_failure)
            yield row

    def _run_worker(self, row: Row, artifact: Artifact, runtime: RuntimeSpec, profile: bool, embed: bool,
                    is_reference: bool) -> tuple | str | None:
        """Fill ``row`` from one worker at its threads × batch: latency, the op profile when ``profile``,
        and with ``embed`` the artifact's quality measures, returned (or why they failed, as text).
        Returns "unavailable" (``row`` then says why) when the runtime cannot run here at all."""
        step = "start"
        try:
            with self.target.start_worker(runtime.python_executable, timeout_s=self.config.worker_timeout_s) as worker:
                step = "load"
                loaded = worker.request(
                    "load", format=artifact.format, precision=artifact.precision,
                    path=self.target.put(artifact.model_path), threads=row.threads,
                    layout=artifact.manifest.input["layout"], runner=runtime.runner, options=runtime.options)
                step = "time"
                timing = worker.request("time", input=self.target.put(self.batch_input(artifact, row.batch)),
                                        batch=row.batch, **self.plan.to_dict())
                self.fill_latency(row, loaded["init_ms"], timing, row.batch)
                if profile and self.config.op_profile_runs:
                    step = "profile"
                    row.op_profile = self.profile_ops(worker, artifact, row.batch)
                if embed:
                    step = "embed"
                    try:
                        return self.embed_and_score(worker, artifact, runtime, is_reference)
                    except ValueError as exc:
                        return f"accuracy: {exc}"
        except WorkerError as exc:
            if exc.kind == "unavailable":
                self._status(row, "unavailable", str(exc))
                return "unavailable"
            self._status(row, "failed", f"{step} failed: {exc}")
        except (WorkerDied, TargetError) as exc:
            self._status(row, "failed", str(exc))
        return f"accuracy: {row.reason}" if step == "embed" and row.status == "failed" else None

    def profile_ops(self, worker: WorkerClient, artifact: Artifact, batch: int) -> dict:
        """The runtime's own per-op profile of this row: the slowest ops, or why there is none."""
        try:
            answer = worker.request("profile", input=self.target.put(self.batch_input(artifact, batch)), batch=batch,
                                    runs=self.config.op_profile_runs)
        except WorkerError as exc:
            return {"unavailable": f"profiling failed: {exc}"}
        if "unavailable" in answer:
            return {"unavailable": answer["unavailable"]}
        ops = answer["ops"]
        return {"runs": answer["runs"], "total_ms": sum(op["ms"] for op in ops), "ops": ops[:PROFILED_OPS_KEPT]}

    def embed_and_score(self, worker: WorkerClient, artifact: Artifact, runtime: RuntimeSpec,
                        is_reference: bool) -> tuple[dict, dict | None, dict | None, dict | None]:
        """(accuracy, parity, suites, identities) of one artifact × runtime, embedded by ``worker``; where
        the identities are measured too, a face the pairs share with them is embedded once."""
        if self.identities is not None and self.measured_beyond_pairs(artifact):
            embed = embed_once(self.worker_embed_fn(worker, artifact))
            images = self.images()
            embeddings = embed_images(embed, len(images), images.__getitem__, batch_size=SUITE_CHUNK)
        else:
            embed = None
            local_output = self.workdir / f"embeddings-{artifact.name}-{runtime.name}.npy"
            embeddings = self.embed_file(worker, artifact, self.target.put(self.inputs(artifact)), local_output)
        return (*self.quality(embeddings, artifact, is_reference), self.score_suites(worker, artifact),
                self.score_identities(worker, artifact, embed))

    def embed_file(self, worker: WorkerClient, artifact: Artifact, remote_input: str, local_output: Path) -> np.ndarray:
        """Raw embeddings of the preprocessed images at ``remote_input`` (on the target), via ``local_output``."""
        remote_output = self.target.remote_path_for(local_output)
        worker.request("embed", input=remote_input, output=remote_output,
                       batch=artifact.fixed_batch() or self.config.embed_batch)
        self.target.get(remote_output, local_output)
        return np.load(local_output, allow_pickle=False)

    def worker_embed_fn(self, worker: WorkerClient, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 RGB [N, H, W, 3] -> raw embeddings through ``worker``: preprocessed here with the
        artifact's spec and layout, exchanged as one .npy at a time (overwritten per call, so a
        large set never sits on the target whole)."""
        spec = artifact.preprocess()
        local_input, local_output = self.workdir / "suite-input.npy", self.workdir / "suite-output.npy"

        def embed(images: np.ndarray) -> np.ndarray:
            np.save(local_input, spec.apply(images))
            return self.embed_file(worker, artifact, self.target.send(local_input), local_output)

        return embed

    def measured_beyond_pairs(self, artifact: Artifact) -> bool:
        """Whether the suites and the identities' all-pairs measures are taken on ``artifact``."""
        wanted = self.config.suite_artifacts
        return wanted is None or artifact.name in wanted

    def score_suites(self, worker: WorkerClient, artifact: Artifact) -> dict | None:
        """Per set of ``bench.suites`` what ``facekd eval --sets`` reports for this artifact
        (accuracy ± std, TAR@FAR, AUC, threshold) plus its pair count and whether flip-test was
        on; None without suites."""
        if not self.suites or not self.measured_beyond_pairs(artifact):
            return None
        embed, flip_test = self.worker_embed_fn(worker, artifact), self.config.flip_test
        return {pairs.name: {**accuracy_entry(evaluate(embed, pairs, flip_test=flip_test, batch_size=SUITE_CHUNK)),
                             "pairs": len(pairs), "flip_test": flip_test}
                for pairs in self.suites}

    def score_identities(self, worker: WorkerClient, artifact: Artifact, embed: EmbedFn | None = None) -> dict | None:
        """All-pairs measures of every face of ``bench.identities`` through this artifact (``embed``, else
        its worker), with the strangers its manifest's operating-point rule lets match (None without identities)."""
        if self.identities is None or not self.measured_beyond_pairs(artifact):
            return None
        embeddings = embed_folder(embed or self.worker_embed_fn(worker, artifact), self.identities, batch_size=SUITE_CHUNK)
        points = artifact.manifest.deploy_points() if not artifact.is_teacher else None
        result = measure_identities(embeddings, self.identities.labels, self.config.gallery_size, self.config.fpir,
                                    points=points)
        return {"name": self.identities.root.name, **result.to_dict()}

    def measure_with_benchmark_binary(self, artifact: Artifact) -> Iterator[Row]:
        """Latency-only rows from TFLite's benchmark_model on an adb device."""
        runtime = "benchmark_model"
        if artifact.model_path.suffix not in self.target.suffixes:
            yield self._status(self.base_row(artifact, runtime), "unavailable",
                               "the adb target runs .tflite artifacts only (TFLite benchmark_model)")
            return
        for threads, batch in self.configurations():
            row = self.base_row(artifact, runtime, threads, batch)
            if batch != (artifact.fixed_batch() or 1):
                yield self._status(row, "unavailable", "benchmark_model times the model's own input shape (batch 1)")
                continue
            try:
                timings, load_before, load_after = self.target.benchmark(artifact.model_path, threads, self.plan)
            except (TargetError, BenchmarkOutputError) as exc:
                yield self._status(row, "failed", str(exc))
                continue
            stats = timings.to_latency(batch)
            row.latency = {**stats.to_dict(), "load_before": load_before, "load_after": load_after}
            row.memory = {"peak_rss_mb": timings.peak_memory_mb}
            reason = disturbance(load_before, load_after, self.cores, stats.p50,
                                 timings.p95_us / 1000.0 if timings.p95_us is not None else None)
            row.disturbed, row.disturbed_reason = reason is not None, reason
            yield row


def _unknown_device(target: Target) -> dict:
    return {"name": target.name, "cpu": None, "cores": None, "os": None, "python": None,
            "load_before": None, "load_after": None}


def _resumable(out_path: Path, export_dir: Path, target: Target, config: BenchConfig, pairs: VerificationPairs) -> list[Row]:
    """Rows of an interrupted run of the same benchmark at ``out_path`` (empty when there is none)."""
    if not out_path.is_file():
        return []
    try:
        previous = load_result(out_path)
    except ResultSchemaError:
        return []
    same_run = (not previous.complete and previous.target == target.name and previous.config == config.to_dict()
                and previous.export_dir == str(export_dir) and previous.pairs == _pairs_summary(pairs))
    return previous.rows if same_run else []


def _pairs_summary(pairs: VerificationPairs) -> dict:
    return {"name": pairs.name, "count": len(pairs), "images": len(pairs.images)}


def run_bench(export_dir: str | os.PathLike, pairs: VerificationPairs, config: BenchConfig | None,
              out_path: str | os.PathLike, target: Target | None = None, progress: bool = True,
              identities: "FaceFolder | None" = None) -> Path:
    """Measure every artifact of ``export_dir`` on ``target`` (this machine by default) and write
    one result JSON (:mod:`runtime_bench.results`) to ``out_path``; returns its path. With
    ``identities`` (faces of identities never trained on) every artifact is also measured on all
    their pairs.

    The file is rewritten after every artifact with ``complete: false``, so an interrupted run
    keeps what it measured; running the same benchmark again to the same ``out_path`` resumes
    it: artifacts whose manifest is unchanged are not measured again, except the reference,
    whose embeddings the remaining artifacts need for parity.
    """
    config = config or BenchConfig()
    target = target or LocalTarget()
    export_dir, out_path = Path(export_dir).resolve(), Path(out_path)
    artifacts = discover_artifacts(export_dir, config.artifacts, config.reference)
    pairs = subset_pairs(pairs, config.pairs_per_fold)
    suites = [read_verification_set(spec) for spec in config.suites]
    earlier = _resumable(out_path, export_dir, target, config, pairs)
    rows: list[Row] = []
    result = BenchResult(device=_unknown_device(target), rows=rows, config=config.to_dict(), target=target.name,
                         export_dir=str(export_dir), pairs=_pairs_summary(pairs), complete=False)
    try:
        with tempfile.TemporaryDirectory(prefix="facekd-bench-") as workdir:
            bench = _Bench(target, config, pairs, Path(workdir), progress, suites, identities)
            unreachable = target.unavailable_reason()
            if unreachable is None:
                try:
                    result.device = bench.device_info(probe=True)
                except (WorkerDied, WorkerError, TargetError) as exc:
                    unreachable = f"target {target.name} cannot run the worker: {exc}"
            if unreachable:
                logger.warning("%s", unreachable)
            else:
                logger.info("benchmarking %d artifacts on %s", len(artifacts), target.describe())
            bar = tqdm(artifacts, desc=f"bench on {target.name}", unit="artifact", disable=not progress)
            for artifact in bar:
                bar.set_postfix_str(artifact.name)
                sha = sha256_file(artifact.manifest_path)
                kept = [row for row in earlier if row.artifact == artifact.name and row.manifest_sha256 == sha]
                if kept and artifact.name != config.reference:
                    rows.extend(kept)
                    continue
                rows.extend(bench.measure(artifact, unreachable))
                save_result(result, out_path)
            rows.extend(export_only_rows(Path(export_dir), {artifact.name for artifact in artifacts}))
            if unreachable is None:
                try:
                    result.device["load_after"] = bench.device_info()["load_before"]
                except (WorkerDied, WorkerError, TargetError) as exc:
                    logger.warning("could not read the load average after the run: %s", exc)
    finally:
        target.close()
    result.complete = True
    return save_result(result, out_path)


def run_bench_on_targets(export_dir: str | os.PathLike, pairs: VerificationPairs, config: BenchConfig,
                         out_dir: str | os.PathLike, progress: bool = True,
                         identities: "FaceFolder | None" = None) -> list[Path]:
    """:func:`run_bench` on every target of ``config.targets``; one ``<target>.json`` each in ``out_dir``."""
    paths = []
    for target in make_targets(config):
        name = re.sub(r"[^A-Za-z0-9]+", "-", target.name).strip("-")
        paths.append(run_bench(export_dir, pairs, config, Path(out_dir) / f"{name}.json", target=target,
                               progress=progress, identities=identities))
    return paths
