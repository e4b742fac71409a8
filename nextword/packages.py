"""The project's Python packages, named once.

setup.py installs them (reading this file with runpy: no import of nextword, its configuration or
TensorFlow), the console treats their loggers as the project's (nextword/cli/console.py), and the layout
and security tests walk them.
"""

SHARED = "nextword"  # what every stage may import; it imports no stage
STAGES = ("beam_preprocess", "baseline", "trainer", "batch_predict")
PACKAGES = (SHARED, *STAGES)
