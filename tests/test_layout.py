"""The shape of the code, read with ast (nothing is imported): no import cycles among project modules, the
shared package depends on no stage, and test modules share helpers only through tests/support/. The documents
(README.md, docs/, bench/README.md) map the tree as it is: their links and the paths they name exist."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from nextword.packages import PACKAGES, SHARED, STAGES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def _imported_names(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    """Every dotted name an import statement may load: `import a.b` -> a.b; `from a import b` -> a.b."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the importer's package, one level up per extra dot
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    # a.b when b is a submodule, else a (resolved in import_graph); the package a itself is not the target
    return [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"] or [module]


def _import_module_calls(node: ast.AST) -> list[str]:
    """importlib.import_module("a.b") / __import__("a.b") with a literal name: a dynamic import is an import."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (never run, so no cycle)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}, top-level and function-level imports alike."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped = _type_checking_only(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                candidates = _imported_names(node, name, path.name == "__init__.py")
            else:
                candidates = _import_module_calls(node)
            for candidate in candidates:
                # `from a import b`: a.b when b is a submodule, else a (the module b is an attribute of).
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (a module importing itself is dropped above)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle through the component's first module, for the failure message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return component


def test_the_graph_sees_top_level_function_level_submodule_and_dynamic_imports():
    graph = import_graph()
    assert "nextword.config" in graph["beam_preprocess.pipeline"]  # top level
    assert "nextword.cloud" in graph["nextword.beam.pipelines"]  # inside a function
    assert "nextword.cli" in graph["trainer.__main__"]  # from nextword import cli
    assert "nextword" not in graph["trainer.__main__"]  # `from nextword import cli` loads nextword.cli
    assert {"nextword.cli", "nextword.cli.cli_parsers"} <= graph["trainer.cloud_train"]  # from nextword.cli import
    assert "trainer.main" in graph["nextword"]  # from trainer import main, inside a function
    assert all(target in graph for targets in graph.values() for target in targets)
    dynamic = ast.parse('importlib.import_module("trainer.main")').body[0].value
    assert _import_module_calls(dynamic) == ["trainer.main"]


def test_no_import_cycles_among_project_modules():
    graph = import_graph()
    cycles = {tuple(c): a_cycle(graph, c) for c in strongly_connected(graph)}
    assert not cycles, "import cycles among project modules:\n" + "\n".join(" -> ".join(p) for p in cycles.values())


def test_the_shared_package_imports_no_stage():
    # Its root module is the public Python API, which runs the stages (inside its functions: importing
    # nextword stays cheap); every module under it is shared by the stages and imports none of them.
    found = {
        (importer, target)
        for importer, targets in import_graph().items()
        if importer.split(".")[0] == SHARED and importer != SHARED
        for target in targets
        if target.split(".")[0] in STAGES
    }
    assert not found, "nextword/ (shared) imports a stage:\n" + "\n".join(f"{a} imports {b}" for a, b in sorted(found))


def _test_imports(path: Path) -> set[str]:
    """The `tests...` modules a test file imports (`from tests import x` counts as tests.x)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom):  # relative: from the tests package
            names |= {"tests" + "." * bool(node.module) + (node.module or "")}
            names |= {f"tests.{node.module + '.' if node.module else ''}{alias.name}" for alias in node.names}
    return {n for n in names if n == "tests" or n.startswith("tests.")}


def test_no_test_module_imports_another_test_module_or_conftest():
    test_files = sorted((REPO / "tests").glob("test_*.py"))
    assert len(test_files) > 20
    wrong = []
    for path in test_files:
        for name in sorted(_test_imports(path)):
            leaf = name.split(".")[1] if "." in name else ""
            if leaf.startswith("test_") or leaf == "conftest":
                wrong.append(f"{path.name} imports {name} (shared helpers belong in tests/support/)")
            elif name not in ("tests", "tests.support") and not name.startswith("tests.support."):
                wrong.append(f"{path.name} imports {name}: helpers live in tests/support/")
    assert not wrong, "\n".join(wrong)


def test_the_import_readers_resolve_relative_and_from_imports(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "from tests.test_y import f\nfrom . import conftest\nimport tests.support.beam\nfrom tests import support\n"
    )
    assert _test_imports(tmp_path / "test_x.py") == {
        "tests.test_y", "tests.test_y.f", "tests", "tests.conftest", "tests.support.beam", "tests.support",
    }  # fmt: skip
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def _where_things_live() -> dict[str, str]:
    """README's "Where things live" table: {first cell's path: the row's text}."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {row.split("`")[1]: row for row in rows}


def test_the_readme_map_matches_the_tree():
    rows = _where_things_live()
    packages = {f"nextword/{p.name}/" for p in (REPO / "nextword").iterdir() if (p / "__init__.py").exists()}
    stages = {f"{name}/" for name in STAGES}
    assert packages | stages <= rows.keys(), (packages | stages) - rows.keys()
    wrong = []
    for path, row in rows.items():
        if not (REPO / path).exists():
            wrong.append(path)
        folder = REPO / path if path.endswith("/") else REPO
        for name in re.findall(r"`([a-z_]+\.py)`", row):
            if not (folder / name).exists():
                wrong.append(f"{path}{name}")
    assert not wrong, f"README names what is not in the tree: {wrong}"


# The documents a reader follows: their relative links and the repository paths they name must exist.
DOCUMENTS = ("README.md", "docs/*.md", "bench/README.md")
# A path in backticks is checked when it starts with one of these folders and goes on past it: `trainer/`,
# `nextword/config.py`, `bench/results/quality/*.json`, `tests/test_api.py::test_name`. Paths made by a run
# (`runs/demo/model/`, `<model_dir>/bundle`) start elsewhere and are not checked.
REPO_FOLDERS = (
    "nextword", "beam_preprocess", "baseline", "trainer", "batch_predict", "bench", "docs", "tests", "configs",
    "scripts", "infra", "corpus", "samples",
)  # fmt: skip
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
_FENCED = re.compile(r"^```.*?^```", re.S | re.M)


def _documents() -> list[Path]:
    found = sorted({path for pattern in DOCUMENTS for path in REPO.glob(pattern)})
    assert len(found) >= 8, found
    return found


def _expand_braces(path: str) -> list[str]:
    """`a_{x,y}.json` -> [a_x.json, a_y.json] (one brace group per pass)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    head, tail = path[: match.start()], path[match.end() :]
    return [p for option in match.group(1).split(",") for p in _expand_braces(head + option + tail)]


def _named_paths(text: str) -> list[str]:
    """The repository paths a document names in inline code (fenced blocks are commands, not checked)."""
    paths = []
    for code in _CODE.findall(_FENCED.sub("", text)):
        if any(c.isspace() for c in code) or "/" not in code:
            continue
        if code.split("/", 1)[0] in REPO_FOLDERS and code.split("/", 1)[1]:
            paths.append(code)
    return paths


def _missing_path(path: str) -> str | None:
    """Why a named path does not resolve in the tree, or None when it does."""
    file, _, test = path.partition(":")  # file.py::test_name (one colon at a time: "::" reads as a bind address
    test = test.removeprefix(":")  # to tests/test_security.py)
    for candidate in _expand_braces(file):
        matches = list(REPO.glob(candidate)) if any(c in candidate for c in "*?[") else [REPO / candidate]
        if not any(m.exists() for m in matches):
            return f"{candidate} does not exist"
        if test and not re.search(rf"^def {re.escape(test)}\(", matches[0].read_text(encoding="utf-8"), re.M):
            return f"{candidate} has no test {test}"
    return None


def _broken(document: Path) -> list[str]:
    text = document.read_text(encoding="utf-8")
    name = document.relative_to(REPO) if document.is_relative_to(REPO) else document
    wrong = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        if not (document.parent / target.split("#", 1)[0]).exists():
            wrong.append(f"{name}: link to {target}, which does not exist")
    for path in _named_paths(text):
        if why := _missing_path(path):
            wrong.append(f"{name}: `{path}`: {why}")
    return wrong


def test_the_documents_links_and_named_paths_exist():
    wrong = [problem for document in _documents() for problem in _broken(document)]
    assert not wrong, "\n".join(wrong)


def test_the_document_checker_finds_broken_links_and_paths(tmp_path):
    assert _missing_path("trainer/steps.py") is None
    assert _missing_path("bench/results/predict_bench_{next,score}.json") is None
    assert _missing_path("tests/test_layout.py::test_the_readme_map_matches_the_tree") is None
    assert _missing_path("tests/test_layout.py::no_such_test") == "tests/test_layout.py has no test no_such_test"
    assert _missing_path("bench/results/nothing_*.json") == "bench/results/nothing_*.json does not exist"
    named = _named_paths("`trainer/` `nextword/nope.py` `runs/demo/x` `<dir>/bundle` `a b/c`\n```\nbench/x.py\n```")
    assert named == ["nextword/nope.py"]
    (tmp_path / "there.md").write_text("")
    page = tmp_path / "page.md"
    page.write_text("[a](https://example.com) [b](#top) [c](there.md#x) [d](gone.md) `configs/nope.yaml`\n")
    assert _broken(page) == [
        f"{page}: link to gone.md, which does not exist",
        f"{page}: `configs/nope.yaml`: configs/nope.yaml does not exist",
    ]


def test_the_readme_stays_a_five_minute_read():
    # Issue 35: details belong in docs/, measurements in bench/README.md.
    size = len((REPO / "README.md").read_bytes())
    assert size <= 15_000, f"README.md is {size} bytes: move details to docs/ or bench/README.md"


# Issue 35: measured figures go stale in code. A comment or docstring says why and points to where it is
# measured (bench/results/*.json, a bench/README.md section); bench/ and tests/ are not scanned. Sizes and
# settings ("1 << 20", "8 MB", "2x200", "0.2% of perplexity") are not measurements and pass.
_MEASURED = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?[x×](?!\w)(?!\s*\d)"  # a ratio: 1.20x, 1.06×, 2x faster (not 2x200, 2 x 200)
    r"|(?<![\w.])~?\d+\.\d+\s?(?:ms|µs|us|ns|s|min)\b|~\d+\s?(?:ms|µs|us|ns|s|min)\b"  # a timing: 3.7 ms, ~30 s
    r"|(?:^|(?<=[\s(]))[+−-]\d+(?:\.\d+)?\s?%"  # a measured change: +14%, -0.20%
    r"|\d+(?:\.\d+)?%\s+(?:slower|faster|apart|off|better|worse)\b"  # 10% slower, 2.9% apart
    r"|\b(?:within|was|were)\s+~?\d+(?:\.\d+)?%|~\d+(?:\.\d+)?%"  # within 0.2%, was 0.002%, ~10%
    r"|(?<![\w/-])20\d\d-\d\d-\d\d(?![\w-])"  # a dated run: 2026-12-06 (not a run id like runs/2025-06-02-1)
    r"|\d[\d.,]*k?\s?(?:tokens|lines|examples|records|words|steps|sentences)/s\b"  # throughput: 12.9k tokens/s
)


def _comments_and_docstrings(source: str) -> list[tuple[int, str]]:
    """(first line, text) of each comment (tokenize) and each module, class and function docstring (ast)."""
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    found.append((first.lineno, first.value.value))
    return found


def measured_figures(source: str, name: str) -> list[str]:
    """`name:line: figure` for each measured figure in the source's comments and docstrings."""
    hits = []
    for line, text in _comments_and_docstrings(source):
        for match in _MEASURED.finditer(text):
            hits.append((line + text.count("\n", 0, match.start()), match.start(), match.group(0)))
    return [f"{name}:{line}: {figure!r}" for line, _, figure in sorted(hits)]


def test_no_measured_figures_in_code_comments_or_docstrings():
    hits = [
        hit
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for hit in measured_figures(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert not hits, "measured figures in code (say why, point to bench/results/ or bench/README.md):\n" + "\n".join(
        hits
    )


def test_the_figure_scanner_finds_measurements_and_spares_settings():
    source = '''"""Module.

Evaluation 1.20x as fast, 3.7 ms a step (run of 2026-12-06).
"""
X = "a string 9.9x is code, not a comment"
BUFFER = 1 << 20  # 8 MB of 2x200 or 2 x 200 LSTM rows, 0.2% of perplexity, runs/2025-06-02-123


def f():
    """Measured: 1.06× and +14%, 12.9k tokens/s, ~10% slower, 0.17 s; bf16 was
    0.002% off."""
    return 1  # a gain within 0.2% after ~30 s
'''
    assert measured_figures(source, "m.py") == [
        "m.py:3: '1.20x'",
        "m.py:3: '3.7 ms'",
        "m.py:3: '2026-12-06'",
        "m.py:10: '1.06×'",
        "m.py:10: '+14%'",
        "m.py:10: '12.9k tokens/s'",
        "m.py:10: '~10%'",
        "m.py:10: '0.17 s'",
        "m.py:10: 'was\\n    0.002%'",
        "m.py:12: 'within 0.2%'",
        "m.py:12: '~30 s'",
    ]
