#!/usr/bin/env bash
# Runs the whole test suite (lint + pytest) in .venv, creating it if needed.
source "$(dirname "$0")/venv.sh"
ruff check .
pytest -q "$@"
