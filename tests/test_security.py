"""Security rules, checked over the project's own source: no pickle, yaml.safe_load only,
no eval/exec/shell=True, no server bound to all interfaces."""

from __future__ import annotations

import ast
import pathlib

import pytest

from nextword import packages

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every top-level folder with Python in it (a stage added later is scanned without editing this list).
PACKAGES = tuple(
    sorted(
        p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "runs")) and any(p.rglob("*.py"))
    )
)
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}
ALL_INTERFACES = {"0.0.0.0", "::", "[::]"}


def violations(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where}: calls {func.id}()")
            if isinstance(func, ast.Attribute) and func.attr in UNSAFE_YAML and getattr(func.value, "id", "") == "yaml":
                found.append(f"{where}: yaml.{func.attr} (use yaml.safe_load)")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where}: shell={ast.unparse(kw.value)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            host = node.value.rsplit(":", 1)[0] if node.value.count(":") == 1 else node.value
            if host in ALL_INTERFACES:
                found.append(f"{where}: binds all interfaces ({node.value!r}); use 127.0.0.1")
    return found


def project_files():
    this = pathlib.Path(__file__).resolve()  # its rule tables name what they forbid
    for package in PACKAGES:
        yield from sorted(p for p in (ROOT / package).rglob("*.py") if p.resolve() != this)
    yield ROOT / "setup.py"


@pytest.mark.unit
def test_every_stage_is_scanned():
    assert {*packages.PACKAGES, "bench", "tests"} <= set(PACKAGES)


@pytest.mark.unit
@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "from dill import loads",
        "eval('1')",
        "yaml.load(text)",
        "subprocess.run(cmd, shell=True)",
        "server.bind('0.0.0.0:8000')",
    ],
)
def test_the_scanner_catches_each_rule(snippet):
    assert violations(snippet, "snippet.py")


@pytest.mark.unit
def test_project_source_follows_the_rules():
    found = [v for path in project_files() for v in violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.unit
def test_no_pickle_files_are_tracked():
    # Virtual environments (.venv, .venv-torch) hold third-party test data, not project artifacts.
    outside_venvs = (p for p in ROOT.rglob("*") if not any(part.startswith(".venv") for part in p.parts))
    assert not [p for p in outside_venvs if p.suffix in {".pkl", ".pickle"}]


def test_the_storage_emulator_and_its_proxy_listen_on_loopback_only(gcs_emulator):
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for fields in (line.split() for line in pathlib.Path(table).read_text().splitlines()[1:]):
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].rsplit(":", 1)
                listening.setdefault(int(port, 16), set()).add(address)
    for port in (gcs_emulator.port, gcs_emulator.proxy.port):
        assert listening[port] == {"0100007F"}  # 127.0.0.1, little-endian hex
