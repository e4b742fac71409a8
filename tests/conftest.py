"""Shared fixtures: every test makes its own tiny corpus and uses the local Beam runner."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def local_test_pipeline():
    """A TestPipeline on the local FnApiRunner (Beam's DirectRunner would first try Prism, offline)."""
    from apache_beam.testing.test_pipeline import TestPipeline

    from nextword.cli_common import LOCAL_RUNNER

    return TestPipeline(runner=LOCAL_RUNNER)


@pytest.fixture
def write_files(tmp_path):
    """Writes {relative path: text or bytes} under tmp_path/corpus and returns that folder."""

    def write(files: dict[str, str | bytes]):
        for rel, content in files.items():
            path = tmp_path / "corpus" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode("utf-8") if isinstance(content, str) else content
            path.write_bytes(data)
        return tmp_path / "corpus"

    return write


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny model trained on a synthetic corpus and exported as a bundle (tests/tiny_bundle.py); built once."""
    from tests.tiny_bundle import build_tiny_bundle

    return build_tiny_bundle(str(tmp_path_factory.mktemp("tiny_bundle")))


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A real Cloud Storage emulator process (+ fault proxy) for the session; every client points at it."""
    from tests.gcs_emulator import GcsEmulator

    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs_emulator")).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator, request):
    """A fresh, empty gs:// bucket for one test (its name comes from the test's); no injected faults."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{uuid.uuid4().hex[:8]}"
    gcs_emulator.proxy.clear()
    yield gcs_emulator.create_bucket(name)
    gcs_emulator.proxy.clear()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The shipped synthetic corpus preprocessed for the trainer tests (tests/trainer_support.py)."""
    from tests import trainer_support

    return trainer_support.preprocess(tmp_path_factory)


@pytest.fixture(scope="module")
def ordered(tmp_path_factory):
    """Data whose records are in corpus order, as train.carry_state needs."""
    from tests import trainer_support

    return trainer_support.ordered_data(tmp_path_factory)
