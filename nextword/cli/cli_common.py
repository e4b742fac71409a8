"""Argument parsing shared by every stage's entry point (Beam stages: nextword/beam/pipelines.py)."""

from __future__ import annotations

import argparse
import signal

from nextword.cli import cli_parsers, console

# The shell's codes for "terminated by a signal" (128 + its number): 143 for SIGTERM, 130 for Ctrl-C.
SIGNAL_EXIT_BASE = 128


class Stopped(Exception):
    """A command stopped early for SIGTERM or Ctrl-C at a point that keeps its work, which the message names
    with how to go on; the error boundary prints it as one line and exits 128 + the signal's number."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = signum

    def line(self) -> str:
        return f"{'interrupted' if self.signum == signal.SIGINT else 'preempted'}: {self}"


def describe_exit(returncode: int) -> str:
    """How a child process ended, for a message: "died with SIGSEGV (signal 11)" or "exited with status 1"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "a signal"
    return f"died with {name} (signal {-returncode})"


def parser(stage: str) -> argparse.ArgumentParser:
    """The stage's parser (nextword/cli/cli_parsers.py: the same one `nextword <stage> --help` shows)."""
    return cli_parsers.stage(stage)


def setup_logging(verbose: bool = False) -> None:
    """The console's logging for a program that is not a `nextword` command (bench/): quiet unless verbose."""
    console.setup_logging(verbose)
