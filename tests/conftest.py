"""Shared fixtures: every test makes its own tiny corpus and uses the local Beam runner."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The test layers (markers declared in pytest.ini). A test's layers add up from: its own @pytest.mark.<layer>,
# its module's `pytestmark`, the fixtures it uses (FIXTURE_LAYERS, here) and MODULE_LAYERS (here) for a
# module that has no `pytestmark` yet. `pytest -m unit` runs the fast layer; see pytest.ini for the rest.
LAYERS = ("unit", "beam", "train", "e2e", "storage", "multiprocess")
FIXTURE_LAYERS = {
    "gcs_emulator": "storage",
    "gcs_bucket": "storage",
    "synthetic": "train",  # these three preprocess the corpus and train or feed a model
    "ordered": "train",
    "tiny_bundle": "train",
}
# tests/test_trainer_train.py had another engineer's uncommitted changes when the layers came in;
# move this to a `pytestmark = pytest.mark.train` in that file and drop the entry.
MODULE_LAYERS = {"test_trainer_train.py": ("train",)}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    """Adds the fixture and module layers; refuses a test with no layer, or `unit` mixed with another."""
    problems = []
    for item in items:
        for fixture, layer in FIXTURE_LAYERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(layer)
        for layer in MODULE_LAYERS.get(item.path.name, ()):
            item.add_marker(layer)
        layers = {mark.name for mark in item.iter_markers() if mark.name in LAYERS}
        if not layers:
            problems.append(f"{item.nodeid}: no layer marker; add @pytest.mark.<layer>, one of {', '.join(LAYERS)}")
        elif "unit" in layers and len(layers) > 1:
            others = ", ".join(sorted(layers - {"unit"}))
            problems.append(f"{item.nodeid}: marked unit but also {others} (a fixture in FIXTURE_LAYERS?)")
    if problems:
        raise pytest.UsageError("tests without a valid layer (tests/conftest.py):\n  " + "\n  ".join(problems))


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
    """A tiny model trained on a synthetic corpus and exported as a bundle (support/tiny_bundle.py); built once."""
    from tests.support.tiny_bundle import build_tiny_bundle

    return build_tiny_bundle(str(tmp_path_factory.mktemp("tiny_bundle")))


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A real Cloud Storage emulator process (+ fault proxy) for the session; every client points at it."""
    from tests.support.gcs_emulator import GcsEmulator

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
    """The shipped synthetic corpus preprocessed for the trainer tests (tests/support/trainer.py)."""
    from tests.support import trainer as trainer_support

    return trainer_support.preprocess(tmp_path_factory)


@pytest.fixture(scope="module")
def ordered(tmp_path_factory):
    """Data whose records are in corpus order, as train.carry_state needs."""
    from tests.support import trainer as trainer_support

    return trainer_support.ordered_data(tmp_path_factory)
