"""The teacher cache (and its views) built by several torchrun ranks: the same bytes as one process,
and a killed rank's shard resumes without redoing what any rank had flushed."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from facekd.cli import main
from facekd.config import load_config
from facekd.stages import _cache_teacher, _open_or_build
from facekd.training.teacher_cache import StaleCacheError, build_teacher_cache, build_view_cache
from facekd.training.trainer import TrainingError
from facekd.training.views import ViewSpec
from tests.conftest import run_torchrun, torchrun_command
from tests.test_bad_inputs import _Slow, export_onnx
from tests.test_teacher_cache import ColumnTeacher, make_folder
from tests.test_trainer import tiny_teacher  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
CACHE_FILES = ["index.json", "embeddings.npy", "flipped.npy"]


def _files(cache: Path, names) -> dict[str, bytes]:
    return {name: (cache / name).read_bytes() for name in names}


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo process group of one rank in this process: the parallel code path, without torchrun."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("resume_parallel", [True, False])
def test_a_killed_shard_resumes_where_its_file_says(one_rank_group, tmp_path, resume_parallel):
    folder = make_folder(tmp_path / "faces", {"a": 5, "b": 4, "c": 3})
    dying = ColumnTeacher(fail_after_calls=4)  # two chunks of (image, mirror) calls
    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(dying, folder, tmp_path / "cache", batch_size=5, progress=False, parallel=True)
    shard = json.loads((tmp_path / "cache" / "shard-0.json").read_text())
    assert shard["done"] == [[0, 10]]
    assert json.loads((tmp_path / "cache" / "index.json").read_text())["complete"] is False

    resumed_teacher = ColumnTeacher()
    resumed = build_teacher_cache(resumed_teacher, folder, tmp_path / "cache", batch_size=5, progress=False,
                                  parallel=resume_parallel)
    assert resumed_teacher.images_embedded == 2 * 2, "only the last 2 images (and mirrors) are embedded"
    fresh = build_teacher_cache(ColumnTeacher(), folder, tmp_path / "fresh", batch_size=5, progress=False)
    assert _files(tmp_path / "cache", CACHE_FILES) == _files(tmp_path / "fresh", CACHE_FILES)
    np.testing.assert_array_equal(resumed.embeddings, fresh.embeddings)
    assert not list((tmp_path / "cache").glob("shard-*.json"))  # complete: the progress files are gone


def test_a_parallel_build_resumes_a_killed_single_process_build_and_a_rebuild_forgets_old_shards(
        one_rank_group, tmp_path):
    folder = make_folder(tmp_path / "faces", {"a": 5, "b": 4, "c": 3})
    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(ColumnTeacher(fail_after_calls=2), folder, tmp_path / "cache", batch_size=5, progress=False)
    resumed = ColumnTeacher()
    build_teacher_cache(resumed, folder, tmp_path / "cache", batch_size=5, progress=False, parallel=True)
    assert resumed.images_embedded == 2 * 7  # images 5..11: the index's `done` prefix is kept

    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(ColumnTeacher("column-v2", fail_after_calls=2), folder, tmp_path / "cache", batch_size=5,
                            progress=False, parallel=True)
    assert json.loads((tmp_path / "cache" / "shard-0.json").read_text())["done"] == [[0, 5]]
    other = ColumnTeacher("column-v3")  # another teacher: the v2 shard's ranges must not count
    build_teacher_cache(other, folder, tmp_path / "cache", batch_size=5, progress=False, parallel=True)
    assert other.images_embedded == 2 * 12


def test_the_view_cache_builds_on_the_parallel_path_too(one_rank_group, tmp_path):
    folder = make_folder(tmp_path / "faces", {"a": 5, "b": 4})
    spec = ViewSpec(seed=3)
    parallel = build_view_cache(ColumnTeacher(), folder, tmp_path / "p", spec, views=3, batch_size=6, progress=False,
                                parallel=True)
    single = build_view_cache(ColumnTeacher(), folder, tmp_path / "s", spec, views=3, batch_size=6, progress=False)
    np.testing.assert_array_equal(parallel.embeddings, single.embeddings)


def test_ranks_on_several_machines_open_a_built_cache_or_are_told_to_build_it_on_one(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")

    def never():
        raise AssertionError("ranks on several machines must not build")

    def stale():
        raise StaleCacheError("teacher cache in X is incomplete")

    assert _open_or_build(tmp_path, lambda: "opened", never) == "opened"
    with pytest.raises(TrainingError, match="incomplete; ranks on several machines .* on one node"):
        _open_or_build(tmp_path, stale, never)


def test_a_ranks_teacher_runs_on_its_own_gpu_or_its_share_of_the_cores(tiny_teacher, monkeypatch):  # noqa: F811
    import onnxruntime as ort

    from facekd.training import distributed

    seen, real_session = {}, ort.InferenceSession

    def session(model, options, providers):
        seen.update(providers=providers, threads=options.intra_op_num_threads)
        return real_session(model, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(distributed, "init_process_group", lambda device: None)
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    _cache_teacher(load_config(None, [f"teacher.path={tiny_teacher}", "train.device=cpu"]))
    assert seen["providers"] == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert seen["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


# --- two processes under torchrun ------------------------------------------------------------------


def test_two_ranks_build_the_same_bytes_as_one_process(tiny_faces, tiny_teacher, tmp_path):  # noqa: F811
    """Plain cache (images + mirrors) and a 2-view cache, 24 faces, 4 per chunk: 6 chunks, 3 per rank."""
    common = [f"--data={tiny_faces}", f"--teacher={tiny_teacher}", "--set=teacher.batch_size=4", "--views=2"]
    assert main(["--quiet", "cache-teacher", *common, f"--set=teacher.cache_dir={tmp_path / 'one'}"]) == 0
    done = run_torchrun("cache-teacher", *common, f"--set=teacher.cache_dir={tmp_path / 'two'}")
    assert done.stdout.count("teacher cache ready") == 1  # said once, by rank 0
    names = [*CACHE_FILES, "views/index.json", "views/views.npy"]
    assert _files(tmp_path / "two", names) == _files(tmp_path / "one", names)
    assert not list((tmp_path / "two").rglob("shard-*.json"))


def _rank_process(marker: str, rank: int) -> int | None:
    """pid of the torchrun worker of ``rank`` whose environment holds ``marker`` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if marker.encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_a_sigkilled_rank_resumes_to_the_same_bytes_without_redoing_flushed_chunks(tiny_faces, tmp_path):
    torch.manual_seed(1)
    teacher = export_onnx(_Slow(), tmp_path / "slow.onnx")  # a few seconds per rank: time to kill mid-way
    cache = tmp_path / "cache"
    common = [f"--data={tiny_faces}", f"--teacher={teacher}", "--set=teacher.batch_size=2"]
    marker = f"FACEKD_TEST_RUN={tmp_path}"
    process = subprocess.Popen(torchrun_command(2, "cache-teacher", *common, f"--set=teacher.cache_dir={cache}"),
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1", marker.split("=")[0]: str(tmp_path)})
    try:
        deadline, killed = time.monotonic() + 180, False
        while process.poll() is None and time.monotonic() < deadline and not killed:
            try:  # rank 1 has flushed its first chunk of 2 images
                first = json.loads((cache / "shard-1.json").read_text())["done"]
            except (OSError, ValueError, KeyError):
                first = None
            if first:
                pid = _rank_process(marker, 1)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
            time.sleep(0.002)
        assert killed, "the build finished before rank 1 could be killed"
        assert process.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert json.loads((cache / "index.json").read_text())["complete"] is False
    flushed = {p.name: json.loads(p.read_text())["done"] for p in cache.glob("shard-*.json")}
    chunks = {name: sum((end - start) // 2 for start, end in ranges) for name, ranges in flushed.items()}
    assert 1 <= chunks["shard-1.json"] < 6, flushed  # killed inside its share of 6 chunks
    flushed_chunks = sum(chunks.values())

    done = run_torchrun("cache-teacher", *common, f"--set=teacher.cache_dir={cache}")
    left = re.search(r"resuming teacher cache in \S+: (\d+) of 12 chunks left", done.stderr)
    assert left and int(left.group(1)) == 12 - flushed_chunks, done.stderr[-2000:]
    assert main(["--quiet", "cache-teacher", *common, f"--set=teacher.cache_dir={tmp_path / 'clean'}"]) == 0
    assert _files(cache, CACHE_FILES) == _files(tmp_path / "clean", CACHE_FILES)
