#!/usr/bin/env bash
# The main job end to end on the shipped synthetic corpus, all under runs/demo/.
source "$(dirname "$0")/venv.sh"
rm -rf runs/demo
nextword preprocess --config configs/demo.yaml
nextword train --config configs/demo.yaml
echo "demo done: see runs/demo/ (data/, model/metrics.json, model/curves.png, model/bundle/)"
