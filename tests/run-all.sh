#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run all the tests:
# a virtual environment with the pinned CPU torch and the package, a one-node Slurm cluster on
# localhost (slurm/cluster-up.sh), ruff, and pytest including the slow and Slurm tests.
# The real data the tests use is inside the repository (tests/assets/, xz-compressed): a fresh
# clone needs nothing beside it.
#   bash tests/run-all.sh            # everything
#   FAST=1 bash tests/run-all.sh     # only the fast tests, no Slurm cluster
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
export PATH="$PWD/$VENV/bin:$PATH"

ruff check hpc_forget tests analysis benchmarks slurm
ruff format --check hpc_forget tests analysis benchmarks slurm

if [ "${FAST:-0}" = 1 ]; then
    exec python -m pytest -m "not slow and not slurm" "$@"
fi

if [ -x slurm/cluster-up.sh ] || [ -f slurm/cluster-up.sh ]; then
    # prints `export SLURM_CONF=...` lines; the state lives under $SLURMBOX_STATE
    eval "$(bash slurm/cluster-up.sh | grep '^export ')"
    export HPC_FORGET_REQUIRE_SLURM=1
    trap 'bash slurm/cluster-down.sh >/dev/null 2>&1 || true' EXIT
fi
python -m pytest "$@"
