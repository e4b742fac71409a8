#!/usr/bin/env bash
# The main job end to end on the shipped Shakespeare corpus, all under runs/demo/:
# preprocess -> n-gram baseline -> train (+ evaluate against the baseline, export) -> batch prediction
# -> one-line predictions.
source "$(dirname "$0")/venv.sh"
rm -rf runs/demo
nextword preprocess --config configs/demo.yaml
nextword baseline --config configs/demo.yaml
nextword train --config configs/demo.yaml
nextword predict --config configs/demo.yaml
head -n 2 runs/demo/predictions/predictions-*.jsonl
for prompt in "some of them looks like" "To be, or not to be, that is the" "My lord, I will" "O Romeo, Romeo! wherefore art"; do
  nextword predict "$prompt" --config configs/demo.yaml
done
python - <<'PY'
import json
m = json.load(open("runs/demo/model/metrics.json"))
b = m["baseline"]
if b.get("status") == "ok":
    print(f"test perplexity: LSTM {m['test']['perplexity']:.1f}, {b['order']}-gram Kneser-Ney {b['test']['perplexity']:.1f} "
          f"on the same {b['test']['tokens']} tokens (ratio {b['test']['ratio']:.3f}; below 1: the LSTM is better)")
    mixed = m.get("ngram", m.get("cache", {})).get("test", {})
    best = mixed.get("lstm_cache_ngram", mixed.get("lstm_cache"))
    if best:  # what the bundle's document scoring applies (docs/quality.md)
        print(f"with the continuous cache and the n-gram mixed in (document context): {best['perplexity']:.1f} "
              f"(ratio {best['perplexity'] / b['test']['perplexity']:.3f})")
PY
echo "demo done: see runs/demo/ (data/, data/baseline/, model/metrics.json, model/curves.png, model/bundle/, predictions/)"
