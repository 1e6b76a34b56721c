"""Distillation trainer: student + loss suite on teacher embeddings.

Faces come decoded from RAM or streamed a few batches ahead (`training.images`, `data.preload`).
In cached mode (default) the teacher never runs here: its embeddings come from the teacher
cache — of each image and its mirror, or, with a view cache, of V augmented views per image,
one drawn per image per step and re-created pixel for pixel (`training.views`). In online mode
a worker thread embeds each batch's own fresh views one batch ahead (`training.online`).
Unlabelled faces (`data.unlabelled`) join each batch after the P×K labelled ones.

Single process or `torchrun` (DDP; gloo on CPU, nccl on CUDA). Checkpoints are written
atomically every epoch and every `checkpoint_every_steps`; `resume=True` continues the same run
from `checkpoints/last.pt`, mid-epoch included.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import time
from dataclasses import dataclass, asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .checkpoint import INT8_STUDENT, load_checkpoint, load_student, save_checkpoint, student_state
from facekd.training import distributed
from .config import READING_ONLY_DATA_KEYS, TrainingSection, load_val_pairs
from facekd.core.data import UNLABELLED, FaceFolder, read_identity_list
from facekd.core.verification import evaluate

from .evaluate import student_embed_fn
from .images import fits_in_memory, open_images
from facekd.core.io import atomic_write_json, remove_stale_temp_files, sha256_file, sha256_text
from .losses import LossInputs, LossSuite
from facekd.training.models import make_student
from facekd.training.models.derived import DERIVED_NAME, ConversionError, convert_teacher
from .recordio import RecordIOFaces
from facekd.core.preprocess import PreprocessSpec
from .sampler import IdentityBalancedSampler
from .online import OnlineTeacher
from .quant_aware import INT8_AWARE_QUANTIZER, FakeInt8Student
from .teacher import load_teacher
from .teacher_cache import TeacherCache, ViewCache
from .views import make_view
from facekd.core.errors import FacekdError

log = logging.getLogger(__name__)


class TrainingError(FacekdError, RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass
class TrainResult:
    student_path: Path
    metrics: dict


class DistillNet(nn.Module):
    """Student and loss suite in one module, so DDP synchronises the heads' gradients too."""

    def __init__(self, student: nn.Module, suite: LossSuite, hint_taps: list[int] | None = None):
        super().__init__()
        self.student = student
        self.suite = suite
        self.hint_taps = hint_taps

    def forward(self, images, labels, teacher, queue, queue_labels, teacher_maps=None):
        student_maps = None
        if self.hint_taps:
            embeddings, student_maps = self.student.forward_with_taps(images, self.hint_taps)
        else:
            embeddings = self.student(images)
        inputs = LossInputs(student=embeddings, labels=labels, teacher=teacher, queue=queue,
                            queue_labels=queue_labels, model=getattr(self.student, "float_student", self.student),
                            student_maps=student_maps,
                            teacher_maps=teacher_maps)
        return self.suite(inputs)


def normalise_batch(images: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 [B,H,W,3] RGB (already spec.size) -> float [B,3,H,W], same maths as PreprocessSpec.apply."""
    x = images.float()
    if spec.channel_order == "BGR":
        x = x.flip(-1)
    x = (x - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str,
              milestones: list[float], gamma: float) -> float:
    """Linear warm-up, then cosine to zero or step decay at fractions of training."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    if schedule == "step":
        return gamma ** sum(step >= m * total_steps for m in milestones)
    raise TrainingError(f"optim.schedule must be cosine or step, got {schedule!r}")


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise TrainingError(f"optim.optimizer must be sgd or adamw, got {cfg.optimizer!r}")


class _Dist:
    """Process-group facts; a no-op outside torchrun."""

    def __init__(self, device: torch.device):
        self.world = distributed.world_size()
        self.rank = distributed.rank()
        distributed.init_process_group(device)  # or the one the teacher-cache stage made before
        self.main = self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            distributed.close_process_group()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def retain_freed_memory() -> bool:
    """Keep memory that torch frees inside the process (glibc only; False elsewhere).

    A CPU training step allocates and frees activations of tens of MB. glibc serves every block
    above its mmap threshold (at most 32 MB) from a fresh mmap and unmaps it when freed, so each
    step faults every page in again and the kernel zeroes it: 27–45 % of a step in system time.
    With mmap off and no trimming, freed blocks are reused. Measured on a 2-core EPYC: the
    derived student's step (batch 64) 1.6 s → 1.0 s; peak RSS stays that of one step.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
    return torch.device(name)


def _fingerprint(cfg: TrainingSection) -> str:
    """Hash of the settings that shape training. Only values that differ from their defaults count, so a
    key added to the config later (with a default that keeps the old behaviour) does not break --resume."""
    ignored = {"data": set(READING_ONLY_DATA_KEYS),  # a run started streaming may resume preloading
               "train": {"log_every", "threads", "eval_every"}}
    parts = {}
    for name in ("data", "student", "loss", "optim", "train"):
        section = getattr(cfg, name)
        defaults = asdict(type(section)())
        parts[name] = {k: v for k, v in asdict(section).items()
                       if k not in ignored.get(name, ()) and v != defaults.get(k)}
    return sha256_text(repr(sorted((k, repr(sorted(v.items()))) for k, v in parts.items())))


def open_training_data(cfg: TrainingSection) -> FaceFolder | RecordIOFaces:
    if not cfg.data.aligned_root:
        raise TrainingError("data.aligned_root is not set: pass --data or set FACEKD_DATA / FACEKD_HOME")
    if cfg.data.source == "recordio":
        if cfg.data.train_identities or cfg.data.unlabelled:
            raise TrainingError("data.train_identities and data.unlabelled work with data.source=folder only")
        return RecordIOFaces(cfg.data.aligned_root, max_identities=cfg.data.max_identities)
    identities = read_identity_list(cfg.data.train_identities) if cfg.data.train_identities else None
    if cfg.data.max_identities:
        if identities is None:
            identities = sorted(p.name for p in Path(cfg.data.aligned_root).iterdir() if p.is_dir())
        identities = sorted(identities)[: cfg.data.max_identities]
    return FaceFolder(cfg.data.aligned_root, identities=identities, skip_bad=cfg.data.skip_bad_images,
                      unlabelled=cfg.data.unlabelled)


class TeacherRows:
    """Teacher embeddings [N, ...] of the training set (a cache's memory-mapped array), handed out
    as float32 tensors row by row: indexed in place per batch (the page cache, shared by every rank
    and worker, holds them), or from a private RAM copy made at start when ``copy``."""

    def __init__(self, array: np.ndarray, copy: bool):
        self.array = np.array(array, dtype=np.float32) if copy else array
        self.shape = self.array.shape

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index) -> torch.Tensor:
        """Rows ``index`` (index arrays or tensors, or a tuple of them: numpy advanced indexing)."""
        index = tuple(map(np.asarray, index)) if isinstance(index, tuple) else np.asarray(index)
        return torch.from_numpy(np.asarray(self.array[index], dtype=np.float32))


def class_centres(embeddings: TeacherRows, rows: np.ndarray, labels: torch.Tensor, num_classes: int,
                  chunk: int = 1 << 16) -> torch.Tensor:
    """L2-normalised mean teacher embedding of each class over images ``rows`` ([C, Dt]), read
    ``chunk`` rows at a time (``labels`` per image of the set)."""
    sums = torch.zeros(num_classes, embeddings.shape[1])
    for start in range(0, len(rows), chunk):
        part = torch.from_numpy(np.asarray(rows[start : start + chunk], dtype=np.int64))
        sums.index_add_(0, labels[part], embeddings[part])
    return nn.functional.normalize(sums, dim=1)


class Trainer:
    """One training run in `run_dir`; `run()` trains to the end and writes `student.pt`."""

    def __init__(self, cfg: TrainingSection, run_dir: str | Path, cache: TeacherCache, folder: FaceFolder,
                 resume: bool = False, progress: bool = True, views: ViewCache | None = None):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self._set_up_process(cfg)
        self._set_up_data(cfg, cache, folder, views)
        self._set_up_losses(cfg, folder)
        self._set_up_schedule(cfg)
        self._set_up_run(cfg, resume)

    def _set_up_process(self, cfg: TrainingSection) -> None:
        """Device, ranks, threads, allocator, seed; stale temporary files of a killed run removed."""
        self.device = pick_device(cfg.train.device)
        self.dist = _Dist(self.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if self.device.type == "cpu" and not retain_freed_memory():
            log.info("not glibc: freed memory goes back to the OS (CPU steps may be slower)")
        torch.manual_seed(cfg.train.seed)
        self.ckpt_dir = self.run_dir / "checkpoints"
        if self.dist.main:
            remove_stale_temp_files(self.run_dir)

    def _set_up_data(self, cfg: TrainingSection, cache: TeacherCache, folder: FaceFolder, views: ViewCache | None) -> None:
        """Faces, the teacher's embeddings of them (cached, views or online), the student and its input."""
        self.folder = folder
        self.labels = torch.from_numpy(np.asarray(folder.labels, dtype=np.int64))
        # teacher embeddings: copied into RAM when data.preload says so (auto: when all of them fit
        # its 2 GiB budget), else read from the cache's memory maps batch by batch
        arrays = [a for a in (cache.embeddings, cache.flipped, views.embeddings if views is not None else None)
                  if a is not None]
        copy = fits_in_memory(cfg.data.preload, sum(4 * a.size for a in arrays))
        self.teacher = TeacherRows(cache.embeddings, copy)
        self.teacher_flipped = TeacherRows(cache.flipped, copy) if cache.flipped is not None else None
        if len(self.teacher) != len(folder):
            raise TrainingError("teacher cache and dataset differ in size: rebuild it with `facekd cache-teacher`")
        self.student, self.spec = make_student(cfg)
        if cfg.train.init_from:
            self._start_from(cfg.train.init_from)
        self.images = open_images(folder, self.spec, cfg.data.preload, cfg.data.loader_workers,
                                  self.progress and self.dist.main)
        self.val_pairs = load_val_pairs(cfg)
        if self.val_pairs is None and self.dist.main:
            log.warning("no validation pairs (data.val_pairs is not set): training reports no accuracy "
                        "and keeps the last epoch's weights")
        self.labelled = folder.labelled
        self.unlabelled = np.flatnonzero(folder.labels == UNLABELLED)
        if len(self.labelled) == 0:
            raise TrainingError("the training data has no labelled identity: the P×K sampler needs some")
        if cfg.data.unlabelled_per_batch and len(self.unlabelled) == 0:
            raise TrainingError("data.unlabelled_per_batch > 0 but data.unlabelled adds no faces")
        self.views = views
        self.view_teacher = None
        if views is not None:
            if cfg.teacher.preprocess.size != self.spec.size:
                raise TrainingError("teacher views need the same input size for teacher and student "
                                    f"({cfg.teacher.preprocess.size} vs {self.spec.size})")
            if views.embeddings.shape[0] != len(folder):
                raise TrainingError("teacher view cache and dataset differ in size: rebuild it with `facekd cache-teacher --views V`")
            self.view_teacher = TeacherRows(views.embeddings, copy)
        self.online = None
        if cfg.teacher.mode == "online":
            teacher = load_teacher(cfg.teacher.path, cfg.teacher.preprocess, threads=cfg.teacher.online_threads)
            self.online = OnlineTeacher(teacher, self.labels, cfg.teacher.view_spec,
                                        cfg.teacher.mixup, seed=cfg.train.seed * 1_000_003 + self.dist.rank)
        elif cfg.teacher.mode != "cached":
            raise TrainingError(f"teacher.mode must be cached or online, got {cfg.teacher.mode!r}")

    def _set_up_losses(self, cfg: TrainingSection, folder: FaceFolder) -> None:
        """The loss suite, the network that computes it, the optimizer (DDP-wrapped across ranks)."""
        num_classes = len(folder.classes)
        centres = (class_centres(self.teacher, self.labelled, self.labels, num_classes)
                   if cfg.loss.logit_kd > 0 else None)
        self.hint_teacher, taps, hint_channels = self._hint_teacher(cfg)
        self.suite = LossSuite(cfg.loss, num_classes=num_classes, student_dim=self.student.embedding_size,
                               teacher_dim=self.teacher.shape[1], class_centres=centres, hint_channels=hint_channels)
        # channels_last: 1.4× faster training steps measured on a 2-core AVX2 CPU (depthwise convs)
        self.student.to(memory_format=torch.channels_last)
        self.net = DistillNet(self.student, self.suite, taps).to(self.device)
        self._wrap_net()
        self.optimizer = make_optimizer(cfg.optim, self.net.parameters())

    def _set_up_schedule(self, cfg: TrainingSection) -> None:
        """The P×K sampler and the step counts of an epoch, the run and its warm-up."""
        self.sampler = IdentityBalancedSampler(self.labels.numpy()[self.labelled], cfg.data.identities_per_batch,
                                               cfg.data.images_per_identity, seed=cfg.train.seed,
                                               rank=self.dist.rank, world_size=self.dist.world)
        self.steps_per_epoch = len(self.sampler)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise TrainingError("an epoch has no batch: lower data.identities_per_batch or add identities")
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        self.int8_steps = self.steps_per_epoch * cfg.train.int8_aware_epochs
        self.warmup_steps = int(cfg.optim.warmup_epochs * self.steps_per_epoch)

    def _set_up_run(self, cfg: TrainingSection, resume: bool) -> None:
        """Where the run stands: a fresh start, or the last checkpoint of the same config; TensorBoard."""
        self.fingerprint = _fingerprint(cfg)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_accuracy, self.history = -1.0, []
        self.step_times: list[float] = []
        last = self.ckpt_dir / "last.pt"
        if resume:
            self._restore(last)
        elif last.exists():
            raise TrainingError(f"{self.run_dir} already holds a run: pass --resume to continue it or choose another --out")
        self.writer = None
        if self.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    # -- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        return student_state(
            self.student, self.spec,
            epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
            best_accuracy=self.best_accuracy, history=self.history, fingerprint=self.fingerprint,
            trainer={"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()},
        )

    def _save(self, name: str, state: dict | None = None) -> Path | None:
        if not self.dist.main:
            return None
        return save_checkpoint(self.ckpt_dir / name, state or self._state())

    def _restore(self, path: Path) -> None:
        if not path.exists():
            raise TrainingError(f"--resume: no checkpoint at {path}; start without --resume")
        state = load_checkpoint(path)
        if state.get("fingerprint") != self.fingerprint:
            raise TrainingError(f"--resume: {self.run_dir} was trained with another config; "
                                "resume with the same config or choose another --out")
        if state["epoch"] >= self.cfg.train.epochs and self.cfg.train.int8_aware_epochs:
            self.student.load_state_dict(state["model"])  # what the int8 graph does not hold (BatchNorm counters)
            self._enter_int8_aware()
        self.net.load_state_dict(state["trainer"]["net"])
        self.optimizer.load_state_dict(state["trainer"]["optimizer"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.best_accuracy = state["global_step"], state["best_accuracy"]
        self.history = list(state["history"])
        log.info("resumed %s at epoch %d step %d", path, self.epoch, self.step_in_epoch)

    # -- one step ----------------------------------------------------------------------------
    def _epoch_batches(self) -> list[list[int]]:
        """This epoch's batches as dataset indices: P×K labelled faces, then unlabelled ones."""
        extra = self.cfg.data.unlabelled_per_batch
        batches = []
        for number, positions in enumerate(list(iter(self.sampler))[: self.steps_per_epoch]):
            batch = [int(self.labelled[p]) for p in positions]
            if extra:
                rng = np.random.default_rng([self.cfg.train.seed, self.dist.rank, self.epoch, number])
                batch += [int(i) for i in rng.choice(self.unlabelled, extra, replace=len(self.unlabelled) < extra)]
            batches.append(batch)
        return batches

    def _hint_teacher(self, cfg) -> tuple[nn.Module | None, list[int] | None, list[tuple[int, int]] | None]:
        """For loss.hint: the teacher's own chain in torch (frozen, never saved with the run), the
        taps, and (student, teacher) channels at each tap."""
        if cfg.loss.hint <= 0:
            return None, None, None
        if cfg.train.int8_aware_epochs:
            raise TrainingError("loss.hint cannot run in train.int8_aware_epochs: the simulated int8 graph has no taps")
        if cfg.student.family != DERIVED_NAME:
            raise TrainingError("loss.hint needs student.family=teacher_derived: the student must share the teacher's layers")
        try:
            teacher, _ = convert_teacher(cfg.teacher.path)
        except ConversionError as exc:
            raise TrainingError(f"loss.hint: {exc}") from None
        teacher.eval().requires_grad_(False)
        teacher.to(self.device, memory_format=torch.channels_last)
        taps = self.student.hint_taps()
        probe = torch.zeros(1, 3, self.spec.size, self.spec.size, device=self.device)
        with torch.no_grad():
            _, student_maps = self.student.to(self.device).forward_with_taps(probe, taps)
            teacher_maps = teacher.maps_at(probe, taps)
        for s_map, t_map in zip(student_maps, teacher_maps):
            if s_map.shape[2:] != t_map.shape[2:]:
                raise TrainingError(f"loss.hint: student and teacher maps differ in size at a tap "
                                    f"({tuple(s_map.shape)} vs {tuple(t_map.shape)})")
        return teacher, taps, [(s.shape[1], t.shape[1]) for s, t in zip(student_maps, teacher_maps)]

    def _batch(self, indices: list[int], images: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The step's inputs from its faces (uint8 [B,S,S,3], decoded here when not given)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + self.global_step)
        labels = self.labels[idx]
        if images is None:
            images = self.images.gather(indices)
        if self.online is not None:
            images, teacher, labels = self.online.take(self.global_step, indices, images)
        elif self.view_teacher is not None:
            view_ids = torch.randint(0, self.view_teacher.shape[1], (len(idx),), generator=gen)
            images = torch.from_numpy(np.stack([
                make_view(face.numpy(), self.views.spec, int(i), int(v)) for face, i, v in zip(images, idx, view_ids)]))
            teacher = self.view_teacher[idx, view_ids]
        else:
            teacher = self.teacher[idx]
            if self.teacher_flipped is not None and self.cfg.data.flip_prob > 0:
                flip = torch.rand(len(idx), generator=gen) < self.cfg.data.flip_prob
                images = torch.where(flip[:, None, None, None], images.flip(2), images)
                teacher = torch.where(flip[:, None], self.teacher_flipped[idx], teacher)
        queue = queue_labels = None
        if "queue" in self.suite.needs and self.cfg.train.queue_size > 0:
            q = torch.randint(0, len(self.teacher), (self.cfg.train.queue_size,), generator=gen)
            queue, queue_labels = self.teacher[q].to(self.device), self.labels[q].to(self.device)
        x = normalise_batch(images, self.spec).to(self.device, non_blocking=True)
        teacher = teacher.to(self.device) if "teacher" in self.suite.needs or queue is not None else None
        teacher_maps = None
        if self.hint_teacher is not None:
            with torch.no_grad():
                teacher_maps = self.hint_teacher.maps_at(x, self.net.hint_taps)
        return x, labels.to(self.device), teacher, queue, queue_labels, teacher_maps

    def _step(self, indices: list[int], images: torch.Tensor | None = None) -> dict[str, float]:
        cfg = self.cfg
        lr = self._learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self._batch(indices, images)
        use_amp = cfg.train.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            total, terms = self.ddp(*batch)
        if not torch.isfinite(total):
            raise TrainingError(f"loss became {total.item()} at epoch {self.epoch} step {self.step_in_epoch} "
                                f"(terms {terms}); lower optim.lr or the weight of the diverging term")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        return {"total": float(total.detach()), **terms, "lr": lr}

    def _learning_rate(self) -> float:
        """The float epochs' schedule; in int8-aware epochs, cosine from train.int8_aware_lr to zero."""
        cfg = self.cfg
        if self.int8_aware:
            return cfg.train.int8_aware_lr * lr_factor(self.global_step - self.total_steps, self.int8_steps, 0, "cosine",
                                                       [], 1.0)
        return cfg.optim.lr * lr_factor(self.global_step, self.total_steps, self.warmup_steps, cfg.optim.schedule,
                                        cfg.optim.step_milestones, cfg.optim.step_gamma)

    # -- loop ----------------------------------------------------------------------------------
    def validate(self) -> dict | None:
        if self.val_pairs is None:
            return None
        embed = student_embed_fn(self.net.student, self.spec, self.device)
        return evaluate(embed, self.val_pairs, flip_test=self.cfg.train.flip_test).to_dict()

    def run(self) -> TrainResult:
        cfg = self.cfg
        try:
            while self.epoch < self._last_epoch():
                if self.epoch >= cfg.train.epochs and not self.int8_aware:
                    self._write_float_student()
                    self._enter_int8_aware()
                self._run_epoch()
        except KeyboardInterrupt:
            self._save("last.pt")
            raise TrainingError(f"interrupted at epoch {self.epoch} step {self.step_in_epoch}; "
                                f"checkpoint saved, continue with --resume (run dir {self.run_dir})") from None
        finally:
            if self.writer:
                self.writer.close()
            if self.online is not None:
                self.online.close()
        result = self._finish()
        self.dist.close()
        return result

    def _run_epoch(self) -> None:
        cfg = self.cfg
        self.sampler.set_epoch(self.epoch)
        batches = self._epoch_batches()
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, unit="step",
                   desc=self._epoch_name(), disable=not (self.progress and self.dist.main))
        self.net.train()
        # this rank's faces of the rest of the epoch, one batch held ahead for the online teacher
        faces = self.images.batches(batches[self.step_in_epoch:])
        upcoming = next(faces, None)
        for position, indices in enumerate(batches[self.step_in_epoch:], start=self.step_in_epoch):
            images, upcoming = upcoming, next(faces, None)
            if self.online is not None and upcoming is not None:
                self.online.prefetch(self.global_step + 1, batches[position + 1], upcoming)
            started = time.perf_counter()
            values = self._step(indices, images)
            self.step_times.append(time.perf_counter() - started)
            self.step_in_epoch += 1
            self.global_step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values['total']:.3f}")
            if self.writer and self.global_step % cfg.train.log_every == 0:
                for key, value in values.items():
                    self.writer.add_scalar(f"train/{key}", value, self.global_step)
                self.writer.add_scalar("train/step_ms", 1000 * self.step_times[-1], self.global_step)
            if cfg.train.checkpoint_every_steps and self.global_step % cfg.train.checkpoint_every_steps == 0:
                self._save("last.pt")
        bar.close()
        self.epoch += 1
        self.step_in_epoch = 0
        record = {"epoch": self.epoch, "step": self.global_step}
        if self.epoch % cfg.train.eval_every == 0 or self.epoch in (cfg.train.epochs, self._last_epoch()):
            metrics = self.validate() if self.dist.main else None
            if metrics:
                record["val"] = metrics
                log.info("epoch %d: val accuracy %.4f", self.epoch, metrics["accuracy"])
                if self.writer:
                    self.writer.add_scalar("val/accuracy", metrics["accuracy"], self.global_step)
                    self.writer.add_scalar("val/auc", metrics["auc"], self.global_step)
        self.history.append(record)
        self._save("last.pt")
        self.dist.barrier()

    def _finish(self) -> TrainResult:
        final = self.history[-1].get("val") if self.history else None
        steady = self.step_times[min(5, len(self.step_times) - 1):] if self.step_times else []
        metrics = {"val": final, "epochs": self.epoch, "steps": self.global_step,
                   "step_ms_median": 1000 * float(np.median(steady)) if steady else None,
                   "history": self.history}
        student = self.run_dir / "student.pt"
        if self.cfg.train.int8_aware_epochs:
            record = {"quantizer": INT8_AWARE_QUANTIZER, "epochs": self.cfg.train.int8_aware_epochs,
                      "lr": self.cfg.train.int8_aware_lr, "val": final}
            metrics.update(val=self._float_val(), int8_aware=record)
            self._write_student(INT8_STUDENT, final, int8_aware=record)
        else:
            self._write_student(student.name, final)
        if self.dist.main:
            atomic_write_json(self.run_dir / "metrics.json", metrics)
        self.dist.barrier()
        return TrainResult(student, metrics)

    def _write_student(self, name: str, val: dict | None, **extra) -> None:
        if self.dist.main:
            save_checkpoint(self.run_dir / name, student_state(
                self.student, self.spec, epoch=self.epoch, threshold=(val or {}).get("threshold"),
                metrics={"val": val}, **extra))

    # -- int8-aware epochs -------------------------------------------------------------------
    def _start_from(self, path: str) -> None:
        """The student's weights from the float student at ``path`` (train.init_from)."""
        source, _, _ = load_student(path)
        if asdict(source.arch) != asdict(self.student.arch):
            raise TrainingError(f"train.init_from: {path} holds another student than this config builds "
                                f"({source.arch} vs {self.student.arch})")
        self.student.load_state_dict(source.state_dict())

    def _float_val(self) -> dict | None:
        return next((r["val"] for r in self.history if r["epoch"] == self.cfg.train.epochs and "val" in r), None)

    def _write_float_student(self) -> None:
        """student.pt from the float epochs, before the int8-aware ones change the weights."""
        if self._float_val() is None and self.dist.main and self.val_pairs is not None:
            self.history.append({"epoch": self.epoch, "step": self.global_step, "val": self.validate()})
        self._write_student("student.pt", self._float_val())

    def _enter_int8_aware(self) -> None:
        """From here on the network trains as the int8 converters will compute it."""
        example = torch.zeros(2, 3, self.spec.size, self.spec.size, device=self.device)
        self.net.student = FakeInt8Student(self.student, example)
        self._wrap_net()
        if self.dist.main:
            log.info("int8-aware epochs: the student trains under simulated int8 (%s)", INT8_AWARE_QUANTIZER)

    @property
    def int8_aware(self) -> bool:
        """Whether the network now trains as the int8 converters will compute it."""
        return isinstance(self.net.student, FakeInt8Student)

    def _wrap_net(self) -> None:
        """The network the steps run: DDP-wrapped across ranks (again after its student changed)."""
        self.ddp = (nn.parallel.DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                    if self.dist.world > 1 else self.net)

    def _last_epoch(self) -> int:
        return self.cfg.train.epochs + self.cfg.train.int8_aware_epochs

    def _epoch_name(self) -> str:
        if self.int8_aware:
            return f"int8-aware epoch {self.epoch - self.cfg.train.epochs + 1}/{self.cfg.train.int8_aware_epochs}"
        return f"epoch {self.epoch + 1}/{self.cfg.train.epochs}"
