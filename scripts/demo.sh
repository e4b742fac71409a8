#!/usr/bin/env bash
# The main job end to end on the shipped synthetic corpus, all under runs/demo/.
source "$(dirname "$0")/venv.sh"
out=runs/demo
nextword preprocess --config configs/demo.yaml --set preprocess.output_dir=$out/data
echo "demo done: see $out/"
