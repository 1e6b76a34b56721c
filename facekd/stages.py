"""Each stage as one call on a run config: the CLI and the demo pipeline both use these."""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

from facekd.training import distributed
from facekd.core.data import FaceFolder
from facekd.core.verification import evaluate
from facekd.core.io import atomic_write_json, sha256_text
from facekd.training.teacher import load_teacher
from facekd.training.teacher_cache import (StaleCacheError, TeacherCache, ViewCache, build_teacher_cache, build_view_cache,
                                    cache_key, view_cache_key)
from facekd.training.config import load_val_pairs
from facekd.training.trainer import Trainer, TrainingError, TrainResult, open_training_data, pick_device

from .bench_stage import load_val_identities, onnx_teacher
from .config import RunConfig, save_config
from .paths import cache_dir

log = logging.getLogger(__name__)


def _cache_dir(cfg: RunConfig, key: dict, kind: str = "") -> Path:
    """teacher.cache_dir (views in its `views/` folder), else a folder of the user cache named by the key."""
    if cfg.teacher.cache_dir:
        return Path(cfg.teacher.cache_dir, kind)
    return cache_dir() / "teacher" / (sha256_text(repr(sorted(key.items())))[:16] + (f"-{kind}" if kind else ""))


def _open_or_build(directory: Path, open_cache, build_cache):
    """The cache, built (or resumed) when it is missing, stale or incomplete. Under torchrun on one
    machine every rank goes to the build, which rank 0 finds complete or plans: no rank decides
    alone. Ranks on several machines only open it (they would share memory-mapped files)."""
    if _parallel() and distributed.local_world_size() == distributed.world_size():
        return build_cache()
    try:
        return open_cache()
    except StaleCacheError as exc:
        if _parallel():
            raise TrainingError(f"{exc}; ranks on several machines cannot build it together: build it first on one "
                                "node with `torchrun --nnodes 1 --nproc_per_node N -m facekd.cli cache-teacher`") from None
    with _building(directory):
        try:
            return open_cache()  # another run may have finished it while this one waited
        except StaleCacheError as exc:
            log.info("embedding the training faces with the teacher, once: %s", exc)
        return build_cache()


@contextmanager
def _building(directory: Path):
    """Hold ``<cache>.lock`` while building the cache: a second run with the same key (the user cache is
    shared by all their runs) waits for the first, saying so, instead of writing beside it."""
    from filelock import FileLock, Timeout

    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory.with_name(directory.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another run is building the teacher cache %s: waiting for it to finish", directory)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _parallel() -> bool:
    return distributed.world_size() > 1


def _cache_teacher(cfg: RunConfig):
    """The teacher for building a cache; under torchrun on this rank's GPU (CUDA provider) or its
    share of the CPU cores, and the process group the ranks build with."""
    if not _parallel():
        return load_teacher(cfg.teacher.path, cfg.teacher.preprocess)
    distributed.init_process_group(pick_device(cfg.train.device))
    return load_teacher(cfg.teacher.path, cfg.teacher.preprocess, threads=distributed.cpu_threads_per_process(),
                        device_id=distributed.local_rank())


def ensure_teacher_cache(cfg: RunConfig, folder: FaceFolder | None = None, progress: bool = True) -> TeacherCache:
    """Open the teacher cache for this teacher + preprocessing + dataset, building it if absent or
    stale; under torchrun the ranks build it together, each embedding its own share."""
    folder = folder or open_training_data(cfg)
    teacher = _cache_teacher(cfg)
    key = cache_key(teacher, folder, cfg.teacher.with_flip)
    directory = _cache_dir(cfg, key)
    return _open_or_build(directory, lambda: TeacherCache.open(directory, key),
                          lambda: build_teacher_cache(teacher, folder, directory, with_flip=cfg.teacher.with_flip,
                                                      batch_size=cfg.teacher.batch_size, progress=progress,
                                                      parallel=_parallel()))


def ensure_view_cache(cfg: RunConfig, folder: FaceFolder | None = None, progress: bool = True) -> ViewCache | None:
    """The consistent-view teacher cache of `teacher.views` views per image (None when views = 0 or
    the teacher runs online), built or resumed like the plain cache, in a folder of its own key."""
    if cfg.teacher.views <= 0 or cfg.teacher.mode == "online":
        return None
    folder = folder or open_training_data(cfg)
    teacher = _cache_teacher(cfg)
    spec, views = cfg.teacher.view_spec, cfg.teacher.views
    key = view_cache_key(teacher, folder, spec, views)
    directory = _cache_dir(cfg, key, kind="views")
    return _open_or_build(directory, lambda: ViewCache.open(directory, key, spec),
                          lambda: build_view_cache(teacher, folder, directory, spec, views,
                                                   batch_size=cfg.teacher.batch_size, progress=progress,
                                                   parallel=_parallel()))


def check_teacher(cfg: RunConfig, run_dir: Path, progress: bool = True) -> dict:
    """Say how the teacher is fed, and measure the teacher itself on the val pairs before training (once
    per run, kept in ``teacher_check.json``): a wrong ``teacher.preprocess`` shows as a weak teacher, not
    as a weak student."""
    record = run_dir / "teacher_check.json"
    if record.is_file():
        return json.loads(record.read_text())
    teacher = load_teacher(cfg.teacher.path, cfg.teacher.preprocess)
    inside = getattr(teacher, "input_normalisation", None)
    graph = f"; the graph itself then computes (x − {inside[0]:g})·{inside[1]:g}" if inside else ""
    log.info("teacher %s: input %s %s, fed %s (teacher.preprocess)%s; runs on %s", Path(cfg.teacher.path).name,
             getattr(teacher, "input_name", "?"), getattr(teacher, "input_shape", "?"),
             cfg.teacher.preprocess.describe(), graph, getattr(teacher, "runtime", "torch"))
    checked = {"teacher": cfg.teacher.path, "preprocess": cfg.teacher.preprocess.to_dict(), "val": None}
    pairs = load_val_pairs(cfg)
    if pairs is not None:
        result = evaluate(teacher.embed, pairs, progress=progress)
        checked["val"] = {"pairs": cfg.data.val_pairs, "accuracy": result.accuracy, "accuracy_std": result.accuracy_std}
        log.info("the teacher itself on %s: %.2f %% ± %.2f (were it far below what this teacher is known to reach, "
                 "teacher.preprocess would not match it)", Path(cfg.data.val_pairs).name, 100 * result.accuracy,
                 100 * result.accuracy_std)
    atomic_write_json(record, checked)
    return checked


def train_student(cfg: RunConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> TrainResult:
    folder = open_training_data(cfg)
    cache = ensure_teacher_cache(cfg, folder, progress)
    views = ensure_view_cache(cfg, folder, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.loss.distils:
        log.warning("every teacher term of the loss is 0: the student learns from the labels alone "
                    "(the demo's recipe distils with loss.hard_fcd=100; see facekd/demo.yaml)")
    if distributed.rank() == 0:
        check_teacher(cfg, run_dir, progress)
    trainer = Trainer(cfg, run_dir, cache, folder, resume=resume, progress=progress, views=views)
    if trainer.dist.main:
        save_config(cfg, run_dir / "config.yaml")
    return trainer.run()


def calibration_faces(cfg: RunConfig, count: int):
    """A seeded, identity-spread sample of ``count`` real training faces: file paths of a folder
    dataset, decoded faces of a RecordIO one."""
    import numpy as np
    from facekd.export.faces import FaceSet

    folder = open_training_data(cfg)
    order = sorted(int(i) for i in np.random.default_rng(cfg.train.seed).permutation(len(folder))[:count])
    if isinstance(folder, FaceFolder):
        return [folder.path(i) for i in order]
    return FaceSet(tuple(folder.path(i).name for i in order), tuple(folder.load_rgb(i) for i in order))


def export_student(cfg: RunConfig, checkpoint: Path, out_dir: Path, progress: bool = True):
    """All formats of cfg.export from a student checkpoint, calibrated on training faces and
    gated on the val pairs' faces (identities never trained on)."""
    from facekd.export.build import export_checkpoint

    pairs = load_val_pairs(cfg)
    if pairs is None:
        raise TrainingError("data.val_pairs is not set: export gates every artifact on verification pairs of "
                            "faces never trained on and takes the threshold from them; pass --set data.val_pairs=FILE")
    parity = list(dict.fromkeys(pairs.images))[: cfg.export.parity_count]
    calibration = calibration_faces(cfg, cfg.export.calib_count)
    records = export_checkpoint(checkpoint, out_dir, cfg.export, calibration_images=calibration,
                                parity_images=parity, pairs=pairs, progress=progress, teacher=onnx_teacher(cfg),
                                identities=load_val_identities(cfg))
    save_config(cfg, out_dir / "config.yaml")
    return records
