"""Bytes -> text, the same for every stage that reads text (preprocessing, prediction).

UTF-8; a leading byte-order mark (at a file's start) and a CR before the line end are removed; bytes
that are not UTF-8 become U+FFFD. What was found is returned as flags, which each stage counts.
"""

from __future__ import annotations

BOM = b"\xef\xbb\xbf"
FLAG_BOM = "bom"
FLAG_CRLF = "crlf"
FLAG_NUL = "nul_bytes"
FLAG_UNDECODABLE = "undecodable"


def decode_line(raw: bytes, at_file_start: bool, at_line_end: bool = True) -> tuple[str, tuple[str, ...]]:
    """A line's bytes without its "\\n" (or a piece of a long line) -> (text, flags)."""
    flags = []
    if at_file_start and raw.startswith(BOM):
        raw = raw[len(BOM) :]
        flags.append(FLAG_BOM)
    if at_line_end and raw.endswith(b"\r"):
        raw = raw[:-1]
        flags.append(FLAG_CRLF)
    if b"\0" in raw:
        flags.append(FLAG_NUL)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        flags.append(FLAG_UNDECODABLE)
    return text, tuple(flags)
