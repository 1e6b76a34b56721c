"""What to ship, student vs teacher, the plot's axis, ISA facts and the MAC counters."""
from __future__ import annotations

import torch

from facekd.export.cost import onnx_cost, torch_cost
from facekd.runtime_bench.latency import cpu_features, peak_gmacs
from facekd.runtime_bench.report import GMACS_COLUMN, ScatterPoint, accuracy_axis, row_cells, table_columns
from facekd.runtime_bench.results import Row
from facekd.runtime_bench.verdict import headline, recommend, summary_lines


def row(artifact, acc, std, p50, threads=1, batch=1, role="student", status="ok", params=1_000_000, size=4_000_000):
    fmt = artifact.split("-")[0] if role == "student" else "onnx"
    return Row(artifact=artifact, format=fmt, precision=artifact.rsplit("-", 1)[-1], runtime="default",
               status=status, reason=None if status == "ok" else "x", size_bytes=size, threads=threads, batch=batch,
               accuracy={"acc": acc, "std": std, "tar_at_far": {}, "auc": 0.99, "threshold": 0.3},
               latency={"p50": p50, "mean": p50, "n": 10, "throughput": 1000 / p50},
               model={"params": params, "macs": 150_000_000, "role": role})


ROWS = [
    row("torch-fp32", 0.960, 0.015, 9.0),
    row("onnx-fp32", 0.961, 0.015, 6.0),
    row("onnx-int8", 0.950, 0.016, 4.0),   # within the bar 0.961 - 0.015 = 0.946: a candidate
    row("tflite-int8", 0.930, 0.02, 2.0),  # fastest, but 3 points down: not a candidate
    row("tflite-fp32", 0.959, 0.015, 5.0),
    row("tflite-fp16", 0.959, 0.015, 1.0, status="rejected"),
    row("teacher-onnx-fp32", 0.9937, 0.005, 19.0, role="teacher", params=9_667_074, size=37_000_000),
    row("teacher-onnx-fp32", 0.9937, 0.005, 11.0, threads=2, role="teacher", params=9_667_074, size=37_000_000),
]


def test_recommends_the_fastest_artifact_within_one_fold_std_of_the_best():
    recommendation = recommend(ROWS)
    assert recommendation.best_accuracy.artifact == "onnx-fp32"
    assert recommendation.best.artifact == "onnx-int8"  # 4 ms; tflite-int8 is faster but outside the bar
    assert [r.artifact for r in recommendation.runners_up] == ["tflite-fp32", "torch-fp32"]
    assert recommend([ROWS[-1]]) is None  # a teacher alone: nothing to ship


def test_headline_compares_with_the_teacher_at_the_same_threads_and_batch():
    head = headline(ROWS, recommend(ROWS))
    assert head.teacher.threads == 1 and head.student.artifact == "onnx-int8"
    assert round(head.accuracy_delta_points, 2) == -4.37
    assert round(head.fewer_params, 2) == 9.67 and round(head.smaller_file, 2) == 9.25 and head.faster == 19.0 / 4.0
    lines = summary_lines(ROWS)
    assert lines[0].startswith("**Ship onnx-int8** on this device")
    assert "9.7× fewer parameters" in lines[-1] and "4.8× faster" in lines[-1] and "-4.37 points" in lines[-1]


def test_summary_says_when_the_teacher_is_missing():
    lines = summary_lines(ROWS[:5])
    assert "teacher was not measured" in lines[-1]


def test_accuracy_axis_holds_bars_and_teacher_and_does_not_zoom_into_noise():
    points = [ScatterPoint("a", "a", 1.0, 85.0, 3.0), ScatterPoint("b", "b", 2.0, 85.2, 3.0)]
    low, high = accuracy_axis(points, teacher=99.4)
    assert low <= 82.0 and high >= 99.4 and high <= 100.0
    tight = [ScatterPoint("a", "a", 1.0, 85.00, 0.01), ScatterPoint("b", "b", 2.0, 85.25, 0.01)]
    low, high = accuracy_axis(tight)
    assert high - low >= 2.0  # a 0.25-point spread is not blown up to the full height


def test_cpu_features_from_cpuinfo():
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_tile\n"
    assert cpu_features(x86) == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n"
    assert cpu_features(arm) == ["neon", "dotprod", "i8mm"]
    assert cpu_features("model name: x\n") is None


def test_peak_from_isa_and_clock():
    def cpuinfo(flags, mhz="2100.000", vendor="GenuineIntel", family="6"):
        return f"vendor_id\t: {vendor}\ncpu family\t: {family}\ncpu MHz\t\t: {mhz}\nflags\t\t: {flags}\n"

    xeon = peak_gmacs(cpuinfo("sse2 avx2 fma avx512f avx512_vnni amx_tile"))  # the 2.1 GHz Xeon
    assert (xeon["fp32"], xeon["int8"]) == (67.2, 268.8) and "AMX not modelled" in xeon["basis"]
    zen4 = peak_gmacs(cpuinfo("avx2 fma avx512f avx512_vnni", "2600.000", "AuthenticAMD", "25"))  # 512-bit ops on 256-bit pipes
    assert (zen4["fp32"], zen4["int8"]) == (41.6, 166.4)
    avx2 = peak_gmacs(cpuinfo("avx2 fma", "3000.000", "AuthenticAMD", "23"))  # no VNNI: half the int8 rate
    assert (avx2["fp32"], avx2["int8"]) == (48.0, 96.0)
    assert peak_gmacs("processor\t: 0\nFeatures\t: fp asimd asimddp\n") is None  # Arm: no clock in cpuinfo
    assert peak_gmacs(cpuinfo("sse2 sse4_2")) is None


def test_gmacs_cell_shows_the_share_of_the_peak_for_the_threads_used():
    device = {"peak_gmacs": {"fp32": 40.0, "int8": 160.0, "clock_ghz": 2.5, "basis": "test"}}
    at = table_columns({}).index(GMACS_COLUMN)
    # 150 M MACs: 5 ms -> 30 GMAC/s; fp32 against 40 per core, int8 against 160, two threads against twice that
    assert row_cells(row("tflite-fp32", 0.96, 0.01, 5.0), None, device)[at] == "30.0 (75 % formula)"
    assert row_cells(row("tflite-int8", 0.96, 0.01, 5.0), None, device)[at] == "30.0 (19 % formula)"
    assert row_cells(row("tflite-fp32", 0.96, 0.01, 5.0, threads=2), None, device)[at] == "30.0 (38 % formula)"
    assert row_cells(row("tflite-fp32", 0.96, 0.01, 5.0), None, None)[at] == "30.0"


def test_gmacs_cell_judges_a_row_by_the_measured_ceiling_first():
    device = {"peak_gmacs": {"fp32": 40.0, "int8": 160.0, "clock_ghz": 2.5, "basis": "test"},
              "measured_gmacs": {"fp32": {"1": 50.0, "all": 80.0}, "int8": {"1": 200.0, "all": 350.0}, "cores": 2}}
    at = table_columns({}).index(GMACS_COLUMN)
    # the formula's 40 GMAC/s is below the 50 the core demonstrably does: the measured share is the honest one
    assert row_cells(row("tflite-fp32", 0.96, 0.01, 5.0), None, device)[at] == "30.0 (60 % measured, 75 % formula)"
    assert row_cells(row("tflite-int8", 0.96, 0.01, 5.0), None, device)[at] == "30.0 (15 % measured, 19 % formula)"
    # two threads: twice one thread, at most what all cores achieved together
    assert row_cells(row("tflite-fp32", 0.96, 0.01, 5.0, threads=2), None, device)[at] == "30.0 (38 % measured, 38 % formula)"


def test_ceilings_are_gemm_throughput_this_host_achieves():
    from facekd.runtime_bench.ceilings import fp32_gmacs, int8_gmacs

    assert fp32_gmacs(1, size=128) > 0.1 and int8_gmacs(1, size=128) > 0.1


def test_torch_and_onnx_mac_counters_agree(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.PReLU(8),
                              torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 56 * 56, 16)).eval()
    expected_macs = 56 * 56 * 8 * 3 * 9 + 56 * 56 * 8 * 1 * 9 + 8 * 56 * 56 * 16
    assert torch_cost(net)["macs"] == expected_macs
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    cost = onnx_cost(path)
    assert cost["macs"] == expected_macs
    assert cost["params"] == sum(p.numel() for p in net.parameters())
