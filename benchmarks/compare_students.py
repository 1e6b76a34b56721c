"""Paired comparison of students (checkpoints, or exported artifacts: what int8 costs) on the same
pairs: is one really better, or is it fold noise?

CFP-FP val has 1,436 pairs and a fold std of 2–3 points, so a 1-point difference of two means says
little. Here every student decides the *same* pairs (10-fold protocol, threshold from the other folds)
and an exact McNemar test counts the pairs only one of them gets right; on a set of identities, the
genuine pairs each accepts at its own FAR=1e-4 threshold are compared the same way.

    python benchmarks/compare_students.py BASE.pt OTHER.pt|EXPORT/tflite-int8 [...] \
        --sets ../shared/data/cfp/val/cfp_fp_val.bin ../shared/data/lfw/splits/val_pairs_3000.txt=../shared/data/lfw/aligned_112 \
        --identities ../shared/data/lfw/splits/val_identities.txt=../shared/data/lfw/aligned_112 [--json out.json]

The first model is the baseline every other one is compared with; a model is whatever ``facekd.load``
opens (a ``.pt``, an artifact folder with its manifest, a zoo name).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import facekd
from facekd.core.data import read_identity_set
from facekd.core.verification import embed_folder
from facekd.core.pairs import read_verification_set
from facekd.core.verification import (all_pairs_scores, cross_validated_decisions, embed_pairs, far_threshold, mcnemar,
                                   pair_scores)

FAR = 1e-4


def genuine_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of the same identity, in one fixed order."""
    first, second = np.triu_indices(len(labels), k=1)
    same = labels[first] == labels[second]
    return first[same], second[same]


def set_decisions(embed, verification_set) -> np.ndarray:
    scores = pair_scores(embed_pairs(embed, verification_set, progress=True), verification_set)
    return cross_validated_decisions(scores, verification_set.same, verification_set.folds)


def accepted_genuine(embed, faces) -> tuple[np.ndarray, float]:
    """Which genuine pairs the student accepts at its own FAR=1e-4 threshold, and that threshold."""
    embeddings, labels = embed_folder(embed, faces, progress=True), np.asarray(faces.labels)
    threshold, _ = far_threshold(all_pairs_scores(embeddings, labels), FAR)
    first, second = genuine_pairs(labels)
    return np.sum(embeddings[first] * embeddings[second], axis=1) >= threshold, threshold


def compare(checkpoints: list[Path], sets: list[str], identities: str | None) -> dict:
    embeds = {path: facekd.load(path, threads=1).embed for path in checkpoints}
    table = {}
    for spec in sets:
        verification_set = read_verification_set(spec)
        table[verification_set.name] = {str(path): set_decisions(embeds[path], verification_set) for path in checkpoints}
    if identities:
        faces = read_identity_set(identities)
        table[f"TAR@FAR={FAR:g} ({Path(identities.partition('=')[0]).stem})"] = {
            str(path): accepted_genuine(embeds[path], faces)[0] for path in checkpoints}
    base = str(checkpoints[0])
    return {name: {path: {"rate": float(decided.mean()), **({} if path == base else mcnemar(decided, rows[base]))}
                   for path, decided in rows.items()} for name, rows in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--sets", nargs="+", default=[], help=".bin files and/or PAIRS.txt=IMAGES_ROOT")
    parser.add_argument("--identities", help="IDENTITIES.txt=ROOT (all pairs; genuine pairs accepted at FAR=1e-4)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = compare(args.checkpoints, args.sets, args.identities)
    for name, rows in result.items():
        print(name)
        for path, row in rows.items():
            paired = (f"  only this right {row['only_a']:4d}, only the baseline {row['only_b']:4d}, "
                      f"McNemar p = {row['p_value']:.3f}") if "p_value" in row else "  (baseline)"
            print(f"  {100 * row['rate']:6.2f} %  {path}{paired}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
