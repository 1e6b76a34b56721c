"""Verification of a student checkpoint or a teacher on a pairs file."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .pairs import VerificationPairs
from .preprocess import PreprocessSpec
from .verification import VerificationResult, embed_pairs, evaluate_scores, pair_scores

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
