"""Helpers shared by the test modules (test modules import these, never each other or conftest.py).

beam.py: the local TestPipeline; trainer.py: preprocessed synthetic corpus, tiny configs, trainer
subprocesses; tiny_bundle.py: a tiny trained bundle; gcs_emulator.py: the Cloud Storage emulator
and fault proxy; predict.py: batch-prediction inputs and outputs; preprocess.py: reading windows back.
"""
