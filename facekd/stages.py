"""Each stage as one call on a run config: the CLI and the demo pipeline both use these."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from training.data import FaceFolder
from training.io import sha256_text
from training.teacher import load_teacher
from training.teacher_cache import StaleCacheError, TeacherCache, build_teacher_cache, cache_key
from training.trainer import Trainer, TrainResult, open_training_data

from .config import RunConfig, save_config

log = logging.getLogger(__name__)


def user_cache_home() -> Path:
    base = os.environ.get("FACEKD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "facekd")
    return Path(base)


def _cache_dir(cfg: RunConfig, key: dict) -> Path:
    if cfg.teacher.cache_dir:
        return Path(cfg.teacher.cache_dir)
    return user_cache_home() / "teacher" / sha256_text(repr(sorted(key.items())))[:16]


def ensure_teacher_cache(cfg: RunConfig, folder: FaceFolder | None = None, progress: bool = True) -> TeacherCache:
    """Open the teacher cache for this teacher + preprocessing + dataset, building it if absent or stale."""
    folder = folder or open_training_data(cfg)
    teacher = load_teacher(cfg.teacher.path, cfg.teacher.preprocess)
    key = cache_key(teacher, folder, cfg.teacher.with_flip)
    directory = _cache_dir(cfg, key)
    try:
        return TeacherCache.open(directory, key)
    except StaleCacheError as exc:
        log.info("building teacher cache in %s (%s)", directory, exc)
    return build_teacher_cache(teacher, folder, directory, with_flip=cfg.teacher.with_flip,
                               batch_size=cfg.teacher.batch_size, progress=progress)


def train_student(cfg: RunConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> TrainResult:
    folder = open_training_data(cfg)
    cache = ensure_teacher_cache(cfg, folder, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, cache, folder, resume=resume, progress=progress)
    if trainer.dist.main:
        save_config(cfg, run_dir / "config.yaml")
    return trainer.run()
