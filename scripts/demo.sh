#!/usr/bin/env bash
# The main job end to end on the shipped synthetic corpus, all under runs/demo/:
# preprocess -> train (+ evaluate, export) -> batch prediction -> one-line prediction.
source "$(dirname "$0")/venv.sh"
rm -rf runs/demo
nextword preprocess --config configs/demo.yaml
nextword train --config configs/demo.yaml
nextword predict --config configs/demo.yaml
head -n 3 runs/demo/predictions/predictions-*.jsonl
nextword predict "Gu nai goufo" --config configs/demo.yaml
echo "demo done: see runs/demo/ (data/, model/metrics.json, model/curves.png, model/bundle/, predictions/)"
