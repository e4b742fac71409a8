"""nextword: an LSTM next-word language model, from corpus to bulk prediction."""

import os
import runpy

from setuptools import find_packages, setup

# The package list of nextword/packages.py, read without importing nextword.
HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGES = runpy.run_path(os.path.join(HERE, "nextword", "packages.py"))["PACKAGES"]

setup(
    name="nextword",
    version="0.1.0",
    description="Beam preprocessing, tf.distribute LSTM training and Beam batch prediction of next words",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=[pattern for name in PACKAGES for pattern in (name, f"{name}.*")]),
    install_requires=[
        "tensorflow==2.21.0",
        "tensorboard==2.21.0",  # tf.summary's writer (TensorFlow 2.21 no longer pulls it in)
        "numpy>=1.26",
        "apache-beam[gcp]==2.77.0",
        "google-cloud-storage>=2.18",
        "pyyaml>=6.0",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",  # scripts/test.sh runs the suite on two processes: the tests are mostly one core each
            "kenlm>=0.2",  # tests load the baseline's ARPA file with KenLM itself
            "hypothesis>=6.100",
            "ruff>=0.6",
            "gcp-storage-emulator>=2024.8",
            "cryptography>=42",  # the certificate of tests/support/gcs_emulator.py's TLS proxy
            # the official message types that `nextword cloud render`'s specs must parse into
            "google-cloud-aiplatform>=1.60",
            "google-cloud-scheduler>=2.13",
        ],
    },
    entry_points={"console_scripts": ["nextword=nextword.cli:main"]},
)
