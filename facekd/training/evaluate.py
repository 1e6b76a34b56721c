"""Verification of a student checkpoint or a teacher on a pairs file."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from facekd.core.data import FaceFolder
from facekd.core.pairs import VerificationPairs
from facekd.core.preprocess import PreprocessSpec
from facekd.core.verification import (IdentityResult, VerificationResult, embed_images, embed_pairs, evaluate_scores,
                           measure_identities, pair_scores)

EmbedFn = Callable[[np.ndarray], np.ndarray]


def student_embed_fn(model: torch.nn.Module, preprocess: PreprocessSpec, device: torch.device | str = "cpu") -> EmbedFn:
    """uint8 RGB [N,H,W,3] -> L2-normalised float32 embeddings, through the student in eval mode."""
    spec = preprocess.with_layout("NCHW")

    @torch.no_grad()
    def embed(images: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        batch = torch.from_numpy(spec.apply(images)).to(device)
        out = torch.nn.functional.normalize(model(batch).float(), dim=1).cpu().numpy()
        model.train(was_training)
        return out

    return embed


def evaluate(embed_fn: EmbedFn, pairs: VerificationPairs, flip_test: bool = False,
             batch_size: int = 64, progress: bool = False) -> VerificationResult:
    embeddings = embed_pairs(embed_fn, pairs, batch_size=batch_size, flip_test=flip_test, progress=progress)
    return evaluate_scores(pair_scores(embeddings, pairs), pairs.same, pairs.folds)


def embed_folder(embed_fn: EmbedFn, folder: FaceFolder, flip_test: bool = False, batch_size: int = 64,
                 progress: bool = False) -> np.ndarray:
    return embed_images(embed_fn, len(folder), folder.load_rgb, batch_size, flip_test, progress, folder.root.name)


def evaluate_identities(embed_fn: EmbedFn, folder: FaceFolder, flip_test: bool = False, batch_size: int = 64,
                        progress: bool = False, **measures) -> IdentityResult:
    """All-pairs measures of ``folder``'s identities (:func:`training.verification.measure_identities`)."""
    embeddings = embed_folder(embed_fn, folder, flip_test, batch_size, progress)
    return measure_identities(embeddings, folder.labels, progress=progress, **measures)
