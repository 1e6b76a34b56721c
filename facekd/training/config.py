"""Typed configuration sections of the training stage (composed into the run config by `facekd`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from facekd.core.errors import InputError
from facekd.core.pairs import VerificationPairs, read_lfw_pairs
from facekd.core.preprocess import PreprocessSpec

from .loss_config import LossConfig
from .views import ViewSpec


# data keys that change only how the training faces are read, not the run: a run's identity
# (its resume fingerprint, the demo's train folder) leaves them out
READING_ONLY_DATA_KEYS = ("preload", "loader_workers")


@dataclass
class DataConfig:
    source: str = "folder"            # folder (root/<identity>/<image>) | recordio (root/train.rec+.idx, insightface)
    aligned_root: str = ""            # root/<identity>/<image>, or the folder of train.rec/train.idx/property
    train_identities: str = ""        # optional identity list restricting the training set
    max_identities: int = 0           # keep only the first N identities (sorted); 0 = all (smoke runs, CI)
    val_pairs: str = ""               # LFW pairs.txt-format file
    val_images_root: str = ""         # images the pairs refer to (defaults to aligned_root)
    val_identities: str = ""          # identity list (under val_images_root) never trained on: export's operating
                                      # points and the bench's all-pairs measures come from all their faces
    identities_per_batch: int = 32    # P of the P×K identity-balanced sampler
    images_per_identity: int = 4      # K
    flip_prob: float = 0.5            # horizontal flip (teacher embedding of the flipped image is used)
    skip_bad_images: bool = False     # count and skip unreadable images instead of stopping
    unlabelled: list[str] = field(default_factory=list)  # folders of aligned faces without identities (any layout)
    unlabelled_per_batch: int = 0     # unlabelled faces added to each batch (teacher-only terms use them)
    # Training images: true = decode every face once into RAM (N·S²·3 bytes, on every rank); false =
    # stream: decode only this rank's batches, a few ahead, in `loader_workers` processes; auto =
    # preload when the decoded set is at most 2 GiB (≈ 57 k faces at 112², LFW's 7.9 k = 0.3 GB),
    # else stream (MS1MV3: 5.1 M faces ≈ 190 GB). Both give the same weights. The teacher embeddings
    # follow the same setting: true = copied into RAM, false = read from the cache's memory maps per
    # batch, auto = copied when they fit the 2 GiB budget (all arrays together: N·D·4 bytes, ×2 with
    # mirrors, + N·V·D·4 with views).
    preload: bool | str = "auto"
    loader_workers: int = 2           # streaming: decoding processes (0 = decode in the training process)

    def __post_init__(self) -> None:
        if self.source not in ("folder", "recordio"):
            raise InputError(f"data.source must be folder or recordio, got {self.source!r}")
        if isinstance(self.preload, str):  # a quoted "true"/"false" in YAML
            self.preload = {"true": True, "false": False, "auto": "auto"}.get(self.preload.lower(), self.preload)
        if self.preload not in (True, False, "auto"):
            raise InputError(f"data.preload must be auto, true or false, got {self.preload!r}")
        if self.loader_workers < 0:
            raise InputError(f"data.loader_workers must be >= 0, got {self.loader_workers}")


@dataclass
class TeacherConfig:
    path: str = ""                    # ONNX file of the teacher
    preprocess: PreprocessSpec = field(default_factory=lambda: PreprocessSpec(mean=(0.0,) * 3, std=(1.0,) * 3))
    cache_dir: str = ""               # defaults to <run dir>/../teacher_cache/<key>
    with_flip: bool = True            # also cache embeddings of the flipped images
    batch_size: int = 64
    views: int = 0                    # >0: cache the teacher on this many augmented views per image (view 0 = the image)
    view_spec: ViewSpec = field(default_factory=ViewSpec)  # augmentation of the views (training.views)
    mode: str = "cached"              # cached (teacher never runs in training) | online (teacher embeds each batch)
    mixup: float = 0.0                # online mode: probability that a batch is mixed up (same mix for both nets)
    online_threads: int = 1           # online mode: onnxruntime threads of the teacher worker


@dataclass
class StudentConfig:
    family: str = "mobilefacenet"     # mobilefacenet (from scratch) | teacher_derived (teacher's network, pruned)
    width: float = 1.0                # mobilefacenet width multiplier
    keep_ratio: float = 0.5           # teacher_derived: fraction of each layer's channels kept
    prune_importance: str = "l2"      # teacher_derived: l2 (filter norm) | bn_scale (BatchNorm |γ|)
    head_rank: int = 1                # teacher_derived: spatial filters per channel of the GDC head (SVD of the teacher's)
    embedding_size: int = 128         # mobilefacenet; a derived student keeps the teacher's
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)  # mobilefacenet; derived: the teacher's

    def __post_init__(self) -> None:
        if self.family not in ("mobilefacenet", "teacher_derived"):
            raise InputError(f"student.family must be mobilefacenet or teacher_derived, got {self.family!r}")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise InputError(f"student.keep_ratio must lie in (0, 1], got {self.keep_ratio}")
        if self.width <= 0 or self.embedding_size < 1:
            raise InputError(f"student.width must be > 0 and student.embedding_size >= 1, got {self.width}, "
                             f"{self.embedding_size}")
        if self.head_rank < 1:
            raise InputError(f"student.head_rank must be >= 1, got {self.head_rank}")
        if self.prune_importance not in ("l2", "bn_scale"):
            raise InputError(f"student.prune_importance must be l2 or bn_scale, got {self.prune_importance!r}")


@dataclass
class OptimConfig:
    optimizer: str = "sgd"            # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"          # cosine | step
    step_milestones: list[float] = field(default_factory=lambda: [0.6, 0.85])  # fractions of training
    step_gamma: float = 0.1
    grad_clip: float = 5.0            # max grad norm; 0 disables


@dataclass
class TrainConfig:
    epochs: int = 20
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda
    amp: bool = True                  # mixed precision on CUDA only
    queue_size: int = 4096            # cached teacher embeddings drawn per step for relation terms
    eval_every: int = 1               # epochs between validations
    flip_test: bool = False           # evaluate on image + flipped image
    checkpoint_every_steps: int = 200 # mid-epoch checkpoints so a killed run loses little
    max_steps_per_epoch: int = 0      # 0 = full epoch (small values for smoke runs)
    threads: int = 0                  # torch CPU threads; 0 = torch default
    log_every: int = 20
    init_from: str = ""               # a student.pt (same student config) whose weights start the run
    # int8-aware epochs after `epochs`: the student trained under the int8 converters' simulated
    # arithmetic (training.quant_aware), with the same terms; writes student_int8.pt beside
    # student.pt, and export quantises it for every int8 artifact (static, full-integer)
    int8_aware_epochs: int = 0
    int8_aware_lr: float = 0.002      # their learning rate: cosine from this to zero

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.int8_aware_epochs < 0 or self.epochs + self.int8_aware_epochs < 1:
            raise InputError(f"train.epochs and train.int8_aware_epochs must be >= 0 with at least one epoch, "
                             f"got {self.epochs} and {self.int8_aware_epochs}")
        if self.epochs == 0 and not self.init_from:
            raise InputError("train.epochs=0 (int8-aware epochs only) needs train.init_from: the float student they start from")
        if self.int8_aware_lr <= 0:
            raise InputError(f"train.int8_aware_lr must be > 0, got {self.int8_aware_lr}")


@dataclass
class TrainingSection:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_val_pairs(cfg: TrainingSection) -> VerificationPairs | None:
    """The run's val pairs (``data.val_pairs`` over ``data.val_images_root``), or None when not set."""
    if not cfg.data.val_pairs:
        return None
    return read_lfw_pairs(cfg.data.val_pairs, cfg.data.val_images_root or cfg.data.aligned_root)
