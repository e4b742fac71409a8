"""The trainer's model directory (train.model_dir), as `nextword train` leaves it and later readers find it.

config.yaml       the resolved config (sizes filled in): resume checks compare it
checkpoints/      the newest checkpoints;  best/: the best validation epoch's weights
history.json      one record per epoch;  curves.png: the training curve;  logs/: TensorBoard
metrics.json      valid/test figures and the `baseline` comparison (read by `nextword cloud`)
bundle/           the exported model (nextword/artifacts/bundle.py)
tflite/           `nextword export --format tflite`: the model for a device (trainer/tflite.py)
"""

BUNDLE_DIR = "bundle"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
HISTORY_FILE = "history.json"
