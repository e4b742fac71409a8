"""Error text shared by the stages and their error boundary (nextword/cli), without the CLI's imports."""

from __future__ import annotations


def one_line(err: BaseException) -> str:
    """An error's first non-blank line (its type's name if it has none): what a one-line message shows."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
