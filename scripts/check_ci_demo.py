"""CI check of the mini-demo: every format × precision its config requested whose packages are
installed and which runs on this host produced an `ok` artifact and at least one `ok` benchmark
row; one that cannot run here but whose source can (TensorRT: its ONNX) made that source and
validated it. Every student manifest carries operating points, the clients' identification fixture
is written, and every measured row of the artifacts `bench.suite_artifacts` names has the all-pairs
measures of the val identities.

Usage: python scripts/check_ci_demo.py DEMO_DIR   (exit 1 with the list of what is missing)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from facekd.export.build import plan_jobs
from facekd.config import load_config
from facekd.runtime_bench.results import load_result


def gaps(demo_dir: Path) -> list[str]:
    summary = json.loads((demo_dir / "demo.json").read_text())
    export_dir = Path(summary["export_dir"])
    records = {f"{r['format']}-{r['precision']}": r for r in json.loads((export_dir / "export_summary.json").read_text())}
    rows = load_result(summary["results"][0]).rows
    benched = {row.artifact for row in rows if row.status == "ok"}
    missing = []
    for row, precision, _ in plan_jobs(load_config(export_dir / "config.yaml").export):
        name = f"{row.name}-{precision}"
        record = records.get(name)
        if row.unavailable_reason() is not None and row.source is not None and row.source.unavailable_reason() is None:
            # the artifact cannot be built here, what it is built from must be
            if record is None or record["status"] != "unavailable" or not record.get("parity"):
                missing.append(f"{name}: source not made and validated "
                               f"({record['status'] + ': ' + record['reason'] if record else 'absent'})")
        elif row.unavailable_reason() is not None or row.validate_only() is not None:
            continue  # not installable or not runnable here: reported as unavailable, not required
        elif record is None or record["status"] != "ok":
            missing.append(f"{name}: export {record['status'] + ' (' + record['reason'] + ')' if record else 'absent'}")
        elif name not in benched:
            missing.append(f"{name}: no ok benchmark row")
    return missing + users_gaps(export_dir, rows, load_config(export_dir / "config.yaml").bench.suite_artifacts)


def users_gaps(export_dir: Path, rows, measured: list[str] | None) -> list[str]:
    """Operating points in every ok manifest, the clients' identification fixture, and the
    all-pairs measures of the val identities in every ok benchmark row with accuracy of the
    artifacts ``bench.suite_artifacts`` names (``measured``; None: every one)."""
    missing = [f"{path.parent.name}: manifest without operating points" for path in export_dir.glob("*/manifest.json")
               if json.loads(path.read_text()).get("operating_points") is None
               and not path.parent.name.startswith("teacher")]
    if not (export_dir / "golden" / "identification.json").is_file():
        missing.append("golden/identification.json (the clients' open-set fixture) was not written")
    missing += [f"{row.artifact} ({row.runtime}): no all-pairs measures of the val identities" for row in rows
                if row.status == "ok" and row.accuracy and not row.identities
                and (measured is None or row.artifact in measured)]
    return missing


if __name__ == "__main__":
    problems = gaps(Path(sys.argv[1]))
    for problem in problems:
        print(f"ci-demo: {problem}", file=sys.stderr)
    if not problems:
        print("ci-demo: every installable format exported ok and benchmarked")
    sys.exit(1 if problems else 0)
