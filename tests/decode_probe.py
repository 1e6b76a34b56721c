"""`python -m tests.decode_probe ARGS` = `facekd ARGS`, recording which training faces each process
decodes (tests/test_train_streaming.py runs it under torchrun).

Every decode appends its dataset index to ``$FACEKD_DECODE_LOG/rank<RANK>-<main|worker>-<pid>.txt``:
the rank from torchrun's environment, ``worker`` inside a DataLoader worker process.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from torch.utils.data import get_worker_info

from facekd.core.data import FaceFolder
from facekd.training.recordio import RecordIOFaces


def _recorded(load_rgb):
    def load(self, index: int):
        role = "main" if get_worker_info() is None else "worker"
        name = f"rank{os.environ.get('RANK', '0')}-{role}-{os.getpid()}.txt"
        with open(Path(os.environ["FACEKD_DECODE_LOG"]) / name, "a") as log:
            log.write(f"{index}\n")
        return load_rgb(self, index)

    return load


for dataset in (FaceFolder, RecordIOFaces):
    dataset.load_rgb = _recorded(dataset.load_rgb)

if __name__ == "__main__":
    from facekd.cli import main

    sys.exit(main())
