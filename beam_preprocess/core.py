"""Pure core of preprocessing: plain generators over bytes, tokens and ids.

The Beam shell (`transforms.py`) only wires these together; the benchmark's
single-process reference calls the very same functions.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c

from nextword.text import contract
from nextword.text.contract import TextSettings
from nextword.text.decode import FLAG_BOM, FLAG_CRLF, FLAG_NUL, FLAG_UNDECODABLE, decode_line

# Figures counted per file and summed over the corpus (manifest "counts").
FILE_STATS = (
    "files",
    "empty_files",
    "binary_files",  # skipped, not read: a NUL byte in the first BINARY_SNIFF_BYTES (looks_binary)
    "nul_files",  # read as text, with a NUL byte further in
    "bom_files",
    "bytes",
    "lines",
    "crlf_lines",
    "undecodable_lines",
)


@dataclass(frozen=True)
class CorpusFile:
    """One input file: where it is, its stable key and (optionally) a fixed split."""

    path: str
    key: str  # path relative to the glob's folder: hashing it keeps splits stable
    split: str = ""  # "" -> split by hashed blocks of lines
    size: int = 0  # bytes, as listed: for progress only


def read_lines(stream: BinaryIO, chunk_bytes: int, stats: Counter) -> Iterator[tuple[int, str]]:
    """Yields (line index, text piece) for a byte stream, holding at most ~chunk_bytes.

    A line longer than `chunk_bytes` comes out in several pieces, cut at a
    space so no word is split (a single word longer than a chunk is cut).
    Each piece is decoded as every stage decodes (nextword/text/decode.py): undecodable
    lines, a leading BOM and CRLF endings are counted.
    """
    line_index = 0
    carry = b""
    line_has_error = False
    line_open = False
    first = True
    while True:
        # readline stops short of its limit only at a newline or at the end of the stream.
        limit = max(chunk_bytes - len(carry), 1)
        raw = stream.readline(limit)
        at_end = len(raw) < limit and not raw.endswith(b"\n")
        stats["bytes"] += len(raw)
        data = carry + raw
        carry = b""
        if not data:
            if line_open:  # the last piece of an unterminated line was already yielded
                stats["lines"] += 1
                stats["undecodable_lines"] += line_has_error
            return
        ends_line = raw.endswith(b"\n") or at_end
        if ends_line:
            data = data[:-1] if data.endswith(b"\n") else data
        else:
            cut = data.rfind(b" ")
            if cut <= 0:  # one enormous word: cut it, at a UTF-8 character boundary
                cut = _utf8_boundary(data)
            if cut > 1 and data[cut - 1 : cut] == b"\r":  # may be a CRLF's first half: decoded with its line end
                cut -= 1
            data, carry = data[:cut], data[cut:]
        text, flags = decode_line(data, at_file_start=first, at_line_end=ends_line)
        first = False
        if flags:  # rare: counted apart from the common path
            stats["bom_files"] += FLAG_BOM in flags
            stats["crlf_lines"] += FLAG_CRLF in flags
            stats["_nul"] |= FLAG_NUL in flags
            line_has_error |= FLAG_UNDECODABLE in flags
        yield line_index, text
        line_open = not ends_line
        if ends_line:
            stats["lines"] += 1
            stats["undecodable_lines"] += line_has_error
            line_has_error = False
            line_index += 1
            if at_end:
                return


def _utf8_boundary(data: bytes) -> int:
    """Length of the longest prefix of `data` that ends on a whole UTF-8 character."""
    start = len(data) - 1
    while start > 0 and len(data) - start < 4 and (data[start] & 0xC0) == 0x80:
        start -= 1
    lead = data[start]
    needed = 4 if lead >= 0xF0 else 3 if lead >= 0xE0 else 2 if lead >= 0xC0 else 1
    return start if len(data) - start < needed and start > 0 else len(data)


def iter_split_tokens(
    lines: Iterable[tuple[int, str]],
    settings: TextSettings,
    split_of_line: Callable[[int], str],
) -> Iterator[tuple[str, str]]:
    """(split, token) for every token of a file, with <eos> after each line when enabled.

    Pieces of one line share its index; the end-of-line token follows the last piece.
    """
    line_end = contract.line_end_tokens(settings)
    pending_split: str | None = None  # the split of the line whose end tokens are due
    current = -1
    for index, text in lines:
        if index != current:
            if pending_split is not None:
                yield from ((pending_split, token) for token in line_end)
            current = index
            pending_split = split_of_line(index)
        split = split_of_line(index)
        for token in contract.tokenize(text, settings):
            yield split, token
    if pending_split is not None:
        yield from ((pending_split, token) for token in line_end)


def line_splitter(
    corpus_file: CorpusFile, block_lines: int, valid_fraction: float, test_fraction: float
) -> Callable[[int], str]:
    """Maps a line index to its split: fixed for the file, or by hashed block."""
    if corpus_file.split:
        return lambda _index: corpus_file.split
    cache: dict[int, str] = {}

    def split_of_line(index: int) -> str:
        block = index // block_lines
        if block not in cache:
            cache.clear()  # lines arrive in order: one block at a time is enough
            cache[block] = contract.split_of(f"{corpus_file.key}:{block}", valid_fraction, test_fraction)
        return cache[block]

    return split_of_line


def count_tokens(split_tokens: Iterable[tuple[str, str]]) -> tuple[Counter, Counter]:
    """Training-split word counts, and tokens per split."""
    words: Counter = Counter()
    per_split: Counter = Counter()
    for split, token in split_tokens:
        per_split[split] += 1
        if split == "train":
            words[token] += 1
    return words, per_split


def split_windows(
    split_ids: Iterable[tuple[str, int]], length: int, stride: int, pad_tail: bool = False
) -> Iterator[tuple[str, list[int]]]:
    """(split, window) over a file's id stream; windows never cross a change of split.

    `pad_tail`: each run of one split ends with a padded window (contract.iter_windows).
    """
    for split, run in itertools.groupby(split_ids, key=lambda pair: pair[0]):
        for window in contract.iter_windows((token_id for _, token_id in run), length, stride, pad_tail):
            yield split, window


def predicted_tokens(window: list[int]) -> int:
    """Tokens a window has the model predict: every id after the first, padding excepted."""
    return sum(1 for token_id in window[1:] if token_id != contract.PAD_ID)


def finish_file_stats(stats: Counter) -> Counter:
    """Turns per-file raw markers into the per-file FILE_STATS figures (`files` counts the files read as text)."""
    stats["binary_files"] = stats.pop("_binary", 0)
    stats["files"] = 1 - stats["binary_files"]
    stats["nul_files"] = 1 if stats.pop("_nul", 0) else 0
    return stats


# Git's test for a binary file: a NUL byte among the first 8000 bytes. Text in any 8-bit or UTF-8 encoding
# has none; random or compiled bytes almost surely do, and would fill the vocabulary with junk words.
BINARY_SNIFF_BYTES = 8000


def looks_binary(head: bytes) -> bool:
    """Whether a file whose first BINARY_SNIFF_BYTES bytes are `head` is binary, not text."""
    return b"\0" in head[:BINARY_SNIFF_BYTES]


# --- tf.train.Example encoding ----------------------------------------------
# Hand-written protobuf wire format for Example{features{"ids": int64_list}},
# so workers need not import TensorFlow; tests check it parses with TensorFlow.
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# The start of the ids feature entry of every record encode_example writes (the baseline reads records by it).
FEATURE_KEY = _field(1, contract.FEATURE_IDS.encode("utf-8"))


def encode_example(ids: list[int]) -> bytes:
    packed = b"".join(_varint(i) for i in ids)
    int64_list = _field(1, packed)
    feature = _field(3, int64_list)
    entry = FEATURE_KEY + _field(2, feature)
    features = _field(1, entry)
    return _field(1, features)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _wire_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one protobuf message: varints and length-delimited fields."""
    pos = 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in a window record")
        yield number, wire, value


def decode_example(record: bytes) -> list[int]:
    """The `ids` int64 list of a serialized tf.train.Example (the inverse of encode_example)."""
    for number, _, features in _wire_fields(record):
        for _, _, entry in _wire_fields(features) if number == 1 else ():
            fields = {n: v for n, _, v in _wire_fields(entry)}
            if fields.get(1) != contract.FEATURE_IDS.encode("utf-8"):
                continue
            for kind, _, int64_list in _wire_fields(fields.get(2, b"")):
                if kind != 3:
                    continue
                ids: list[int] = []
                for _, wire, value in _wire_fields(int64_list):
                    if wire == 0:  # one unpacked value
                        ids.append(value - (1 << 64) if value >= 1 << 63 else value)
                        continue
                    pos = 0
                    while pos < len(value):
                        item, pos = read_varint(value, pos)
                        ids.append(item - (1 << 64) if item >= 1 << 63 else item)
                return ids
    raise ValueError(f"record has no {contract.FEATURE_IDS!r} int64 feature")


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord_frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


def iter_tfrecords(stream: BinaryIO, source: str) -> Iterator[bytes]:
    """The records of an (uncompressed) TFRecord stream, each checked against its CRCs."""
    index = 0
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12 or _masked_crc(header[:8]) != header[8:]:
            raise ValueError(f"{source}: record {index} has a damaged header; rerun preprocessing")
        (length,) = struct.unpack("<Q", header[:8])
        record = stream.read(length)
        if len(record) < length or _masked_crc(record) != stream.read(4):
            raise ValueError(f"{source}: record {index} is truncated or corrupt; rerun preprocessing")
        yield record
        index += 1


# Consecutive windows go to one shard in runs of this many, so every shard holds
# long stretches of running text (useful when the trainer carries LSTM state).
SHARD_RUN = 1024


def assign_shards(
    split_windows: Iterable[tuple[str, list[int]]], file_key: str, num_shards: int
) -> Iterator[tuple[str, int, list[int]]]:
    """(split, shard, window): each split's windows go to shards in runs of SHARD_RUN,
    starting at a per-file offset so that small files spread over all shards."""
    offset = int.from_bytes(hashlib.sha256(file_key.encode("utf-8")).digest()[:4], "big")
    seen: Counter = Counter()
    for split, window in split_windows:
        yield split, (offset + seen[split] // SHARD_RUN) % num_shards, window
        seen[split] += 1
