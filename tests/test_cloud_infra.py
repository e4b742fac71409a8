"""The images (infra/Dockerfile.*) agree with setup.py: Docker cannot run here, so their inputs are checked."""

import ast
import os
import re

import pytest

from nextword.packages import PACKAGES

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_kwargs() -> dict:
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    call = next(
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    return {kw.arg: kw.value for kw in call.keywords}


def _pins() -> dict[str, str]:
    requires = ast.literal_eval(_setup_kwargs()["install_requires"])
    return {m.group(1): m.group(2) for r in requires if (m := re.fullmatch(r"([\w-]+)(?:\[\w+\])?==([\d.]+)", r))}


def _dockerfile(name: str) -> str:
    return open(os.path.join(REPO, "infra", name)).read()


def test_images_use_setup_pys_versions_and_copy_every_package():
    pins = _pins()
    python = re.fullmatch(r">=(\d+\.\d+),<.*", ast.literal_eval(_setup_kwargs()["python_requires"])).group(1)
    trainer, beam = _dockerfile("Dockerfile.trainer"), _dockerfile("Dockerfile.beam")
    assert re.search(rf"^FROM tensorflow/tensorflow:{re.escape(pins['tensorflow'])}-gpu$", trainer, re.M)
    assert re.search(rf"^FROM apache/beam_python{python}_sdk:{re.escape(pins['apache-beam'])}$", beam, re.M)
    assert 'ENTRYPOINT ["nextword"]' in trainer and "ENTRYPOINT" not in beam.split("# The base image")[0]
    top_level = set(PACKAGES)  # setup.py installs nextword/packages.py's list
    for text in (trainer, beam):
        assert set(re.findall(r"^COPY (\w+) \./\1$", text, re.M)) == top_level
        assert "COPY setup.py ./" in text
    lines = open(os.path.join(REPO, ".dockerignore")).read().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == top_level | {"setup.py"}
