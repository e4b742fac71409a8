"""Issue 34: generated hostile inputs widen the regression tests of the cases met by hand.

- Corpus files of any bytes (random, other encodings, every line ending, BOMs, NULs, empty, one huge line)
  are read by preprocessing's core without an error, their figures add up, and binary files are skipped.
- A corpus glob over any mix of files, links to files, dangling links, FIFOs and folders lists only regular
  files; the rest is set apart for counting, and nothing is opened.
- Any YAML config file (wrong types, NaN, infinities, huge or negative numbers, unknown keys, aliases, tags,
  random text or bytes) loads, or is exactly one `error:` line that names the key or the file: never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_preprocess import core
from beam_preprocess.transforms import CountFileWordsFn
from nextword import cli, storage
from nextword import config as config_lib

pytestmark = pytest.mark.unit

# A few seconds in all; generation may be slow on a loaded CI machine, which says nothing about the code.
QUICK = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252", "shift_jis", "koi8-r")
LINE_ENDINGS = (b"\n", b"\r\n", b"\r", b"\n\n")


@st.composite
def corpus_bytes(draw) -> bytes:
    """A file as a careless corpus holds it: text in some encoding and line ending, random bytes, or nothing."""
    kind = draw(st.sampled_from(["text", "bytes", "empty", "huge_line"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000))
    if kind == "empty":
        return b""
    if kind == "huge_line":  # one line far longer than a read chunk, with or without spaces
        word = draw(st.text(min_size=1, max_size=4)).encode("utf-8", "surrogatepass")
        return (word * draw(st.integers(50, 3000)))[:20000] + draw(st.sampled_from([b"", b"\n"]))
    encoding = draw(st.sampled_from(ENCODINGS))
    ending = draw(st.sampled_from(LINE_ENDINGS))
    lines = draw(st.lists(st.text(max_size=40), max_size=12))
    data = ending.join(line.encode(encoding, "replace") for line in lines)
    return data + (ending if draw(st.booleans()) else b"")


def expected_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@settings(QUICK, max_examples=40)
@given(data=corpus_bytes(), chunk=st.integers(4, 64))
def test_any_bytes_are_read_as_lines_with_every_byte_and_line_counted(data, chunk):
    stats = Counter()
    pieces = list(core.read_lines(io.BytesIO(data), chunk, stats))
    assert stats["bytes"] == len(data) and stats["lines"] == expected_lines(data)
    assert all(isinstance(text, str) and "\n" not in text for _, text in pieces)
    assert sorted({index for index, _ in pieces}) == list(range(stats["lines"]))  # every line, in order
    assert [index for index, _ in pieces] == sorted(index for index, _ in pieces)


@settings(QUICK, max_examples=40)
@given(
    lines=st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"])), max_size=8
    ),
    crlf=st.lists(st.booleans(), min_size=8, max_size=8),
    bom=st.booleans(),
    final_newline=st.booleans(),
    chunk=st.integers(4, 48),
)
def test_utf8_text_in_any_line_endings_comes_back_line_for_line(lines, crlf, bom, final_newline, chunk):
    endings = [b"\r\n" if crlf[i] else b"\n" for i in range(len(lines))]
    if lines and not final_newline:
        endings[-1] = b""
    body = b"".join(line.encode("utf-8") + end for line, end in zip(lines, endings, strict=True))
    expected = list(lines[:-1] if lines and not endings[-1] and not lines[-1] else lines)  # "" unterminated: none
    if bom and not body:
        expected = [""]  # the BOM alone is one empty line
    stats = Counter()
    joined: dict[int, str] = {}
    for index, text in core.read_lines(io.BytesIO((b"\xef\xbb\xbf" if bom else b"") + body), chunk, stats):
        joined[index] = joined.get(index, "") + text
    assert [joined[i] for i in sorted(joined)] == expected
    assert stats["crlf_lines"] == sum(end == b"\r\n" for end in endings)
    assert stats["bom_files"] == int(bom)


@pytest.fixture(scope="module")
def count_cfg():
    return config_lib.from_dict(None, ["preprocess.read_chunk_bytes=64", "preprocess.text.min_count=0"]).preprocess


@settings(QUICK, max_examples=30)
@given(data=corpus_bytes())
def test_any_corpus_file_is_counted_and_a_binary_one_skipped_by_name(count_cfg, data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "f.txt")
        path.write_bytes(data)
        ((words, figures),) = list(CountFileWordsFn(count_cfg).process(core.CorpusFile(str(path), "f.txt")))
    if core.looks_binary(data[: core.BINARY_SNIFF_BYTES]):
        assert (figures["binary_files"], figures["files"], figures["lines"], len(words)) == (1, 0, 0, 0)
        assert any(str(path) in name for name in figures)  # the manifest names it
        return
    assert (figures["files"], figures["bytes"], figures["lines"]) == (1, len(data), expected_lines(data))
    tokens = sum(n for name, n in figures.items() if name.startswith("tokens."))
    assert figures["empty_files"] == int(tokens == 0)
    assert all(word and not any(c.isspace() for c in word) for word in words)


ENTRY_KINDS = ("file", "empty", "link_to_file", "dangling_link", "fifo", "link_to_fifo", "folder", "link_to_folder")


@settings(QUICK, max_examples=15)
@given(kinds=st.lists(st.sampled_from(ENTRY_KINDS), max_size=8))
def test_a_corpus_glob_lists_only_regular_files_and_sets_the_rest_apart(kinds):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder, "corpus")
        root.mkdir()
        expected = {"files": set(), "not_regular": set(), "dangling_links": set()}
        for i, kind in enumerate(kinds):
            entry = root / f"{i}-{kind}.txt"
            if kind in ("file", "empty"):
                entry.write_text("the cat sat\n" if kind == "file" else "")
                expected["files"].add(str(entry))
            elif kind == "link_to_file":
                (Path(folder) / f"target-{i}").write_text("outside\n")
                entry.symlink_to(Path(folder) / f"target-{i}")
                expected["files"].add(str(entry))
            elif kind == "dangling_link":
                entry.symlink_to(Path(folder) / "nothing")
                expected["dangling_links"].add(str(entry))
            elif kind in ("fifo", "link_to_fifo"):
                fifo = Path(folder) / f"fifo-{i}" if kind == "link_to_fifo" else entry
                os.mkfifo(fifo)
                if kind == "link_to_fifo":
                    entry.symlink_to(fifo)
                expected["not_regular"].add(str(entry))
            else:
                inside = Path(folder) / f"folder-{i}" if kind == "link_to_folder" else entry
                inside.mkdir()
                if kind == "link_to_folder":
                    entry.symlink_to(inside, target_is_directory=True)
        # A FIFO opened for reading would block this test for ever: finishing at all shows none was opened.
        matched = storage.match_regular(f"{root}/**/*")
    assert {path for path, _ in matched.files} == expected["files"]
    assert set(matched.not_regular) == expected["not_regular"]
    assert set(matched.dangling_links) == expected["dangling_links"]


# --- configs ----------------------------------------------------------------------------------------------
def _dotted(tree: dict, prefix: str = "") -> dict[str, bool]:
    """Every dotted key of a config mapping -> whether it is a section."""
    found = {}
    for key, value in tree.items():
        found[prefix + key] = isinstance(value, dict)
        if isinstance(value, dict):
            found |= _dotted(value, f"{prefix}{key}.")
    return found


_DEFAULTS = _dotted(yaml.safe_load(config_lib.to_yaml(config_lib.from_dict(None))))
LEAVES = sorted(path for path, section in _DEFAULTS.items() if not section)
SECTIONS = sorted(path for path, section in _DEFAULTS.items() if section)
# YAML value texts a careless or hostile config holds, most of the wrong type or size for the key they land on.
HOSTILE_VALUES = st.one_of(
    st.sampled_from([
        ".nan", ".NaN", ".inf", "-.inf", "1e9", "1.0e+29", "1e400", "-1", "0", "null", "~", "true", "no", "''",
        '"35"', "[]", "{}", "[1, 2]", "{a: 1}", "&a [*a]", "!!binary aGVsbG8=", "2020-01-01", "0x10", "0o17",
        "1_000", "!!float 1e400", "!!python/object:os.system x", "*undefined", '"\\0"', "!!set {a, b}",
        "!!timestamp 2001-12-14t21:59:43.10-05:00", "&b {x: *b}",
    ]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=10).map(json.dumps),
)  # fmt: skip
NAME = r"[a-z_]{1,6}"  # an unknown key
KNOWN_NAMES = sorted({part for path in [*LEAVES, *SECTIONS] for part in path.split(".")})
HOSTILE_KEYS = st.one_of(  # dotted: where the value lands
    st.sampled_from(LEAVES),
    st.sampled_from(SECTIONS),
    st.builds("{}.{}".format, st.sampled_from(SECTIONS), st.from_regex(NAME, fullmatch=True)),
    st.from_regex(NAME, fullmatch=True),
)


def _render(tree: dict) -> str:
    """A nested mapping of key -> YAML value text, as one flow mapping (its keys quoted as JSON strings)."""
    parts = [f"{json.dumps(k)}: {_render(v) if isinstance(v, dict) else v}" for k, v in tree.items()]
    return "{" + ", ".join(parts) + "}"


@st.composite
def hostile_config(draw) -> bytes:
    """A config file's bytes: mostly a mapping of hostile values, else random text or bytes."""
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "text", "bytes"]))
    if kind == "text":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    tree: dict = {}
    for path, value in draw(st.lists(st.tuples(HOSTILE_KEYS, HOSTILE_VALUES), max_size=5)):
        *sections, leaf = path.split(".")
        node = tree
        for part in sections:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
    return _render(tree).encode()


@settings(QUICK, max_examples=80)
@given(hostile_config())
def test_any_config_file_loads_or_is_one_error_line_naming_the_key_or_file(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "config.yaml")
        Path(path).write_bytes(data)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = cli.guarded(lambda argv: config_lib.load(path, []), [])  # a bug would raise here
    if code == 0:
        return
    lines = stderr.getvalue().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    named = lines[0][len("error: ") :].split(": ", 1)[0]
    source = data.decode("utf-8", "replace")
    assert (
        named.startswith(path)
        or named == "config"
        or all(part.strip("'") in KNOWN_NAMES or part.strip("'") in source for part in named.split("."))
    ), lines[0]
