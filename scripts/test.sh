#!/usr/bin/env bash
# The test suite: Python tests, then the Android core's JVM tests against a freshly exported
# student. Run through `make test` (which sets up .venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONUNBUFFERED=1

if [[ "${FACEKD_REQUIRE_REAL_DATA:-}" == 1 ]]; then
  # the same check the tests and the CLI use (facekd.paths.home_problem)
  $PY -c 'import os, sys; from facekd.paths import home_problem
home = os.path.abspath(os.environ.get("FACEKD_HOME") or "../shared")
problem = home_problem(home)
sys.exit(f"FACEKD_REQUIRE_REAL_DATA=1 but {problem}" if problem else 0)'
fi

OMP_NUM_THREADS=1 $PY -m pytest -q

# The JVM tests need a real exported .tflite + golden vectors from a student trained on real faces.
if [[ -n "${FACEKD_HOME:-}" ]]; then
  # the whole chain in miniature: a small student trained on real faces, exported, benchmarked (the fetched
  # int8bq teacher's path from nothing to a report is tests/test_fetch.py's demo-from-nothing test)
  .venv/bin/facekd demo --config configs/ci.yaml --out build/ci-demo  # exit 3 if an artifact failed or was rejected
  $PY scripts/check_ci_demo.py build/ci-demo
  bash android_demo/run_tests.sh build/ci-demo/export
else
  echo "FACEKD_HOME is not set: JVM golden tests need real faces; running the JVM unit tests only"
  bash android_demo/run_tests.sh
fi
