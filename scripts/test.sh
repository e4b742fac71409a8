#!/usr/bin/env bash
# Runs the whole test suite (lint + format check + pytest) in .venv, creating it if needed.
# One layer only: scripts/test.sh -m unit (layers: unit, beam, train, e2e, storage, multiprocess; see pytest.ini).
source "$(dirname "$0")/venv.sh"
ruff check .
ruff format --check .
# Two test processes (pytest-xdist): most tests keep one core busy (Python, TensorFlow's tracing, Beam's
# runner), so two keep both of CI's cores busy (bench/README.md, "The test suite"). One: scripts/test.sh -n 0.
pytest -q -n 2 --dist worksteal "$@"
