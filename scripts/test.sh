#!/usr/bin/env bash
# Runs the whole test suite (lint + format check + pytest) in .venv, creating it if needed.
# One layer only: scripts/test.sh -m unit (layers: unit, beam, train, e2e, storage, multiprocess; see pytest.ini).
source "$(dirname "$0")/venv.sh"
ruff check .
ruff format --check .
pytest -q "$@"
