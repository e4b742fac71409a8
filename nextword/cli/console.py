"""What the console shows: nextword's own lines, progress bars, results and warnings that need action.

Quiet by default, set up by `start(argv)` before TensorFlow or Beam is imported (which also turns on
Python's faulthandler, so a native crash names where it happened):
- TensorFlow's C++ logs: TF_CPP_MIN_LOG_LEVEL=3 (CPU feature notes, cuInit
  errors, TFRecord notes). TensorFlow 2.21 writes a few lines while its shared
  libraries load, before absl logging reads any setting ("All log messages
  before absl::InitializeLog()", oneDNN, "Could not find cuda drivers"): those
  are dropped from what `import tensorflow` writes to file descriptor 2, and
  every other line it writes there is kept.
- Python logging: third-party INFO (Beam's type-hint conversions, absl's
  "Sharding callback duration", ...) is hidden, their warnings and errors are
  shown, except known noise (NOISE_MESSAGES) and a third-party record carrying
  a traceback: the error boundary (nextword/cli/__init__.py) prints that error's one line.
`--verbose` (or NEXTWORD_VERBOSE=1) leaves all of it alone; `--debug` (or
NEXTWORD_DEBUG=1) makes the error boundary print the traceback too.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from nextword import packages

PROJECT_PACKAGES = frozenset({*packages.PACKAGES, "bench", "__main__"})
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # nextword/cli/ -> repo
PROJECT_DIRS = tuple(os.path.join(_ROOT, name) + os.sep for name in PROJECT_PACKAGES)

# Third-party warnings that ask nothing of the user: (logger name, message start).
NOISE_MESSAGES = (
    ("root", "Resource module is not available"),  # Beam's RunInference on a platform without `resource`
)

# What absl/glog write before their settings are read: "I0000 00:00:1796.5   8903 port.cc:153] ..."
_NATIVE_LOG = re.compile(r"^[IW]\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\] ")
_NATIVE_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Settings:
    verbose: bool = False
    debug: bool = False


_flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
_flags.add_argument("--verbose", action="store_true")
_flags.add_argument("--debug", action="store_true")

_current = Settings()
_nesting = 0  # > 0 while a command runs: a command started by another one keeps the outer's settings


def settings_from(argv: list[str]) -> Settings:
    """--verbose / --debug anywhere before `--`, or NEXTWORD_VERBOSE=1 / NEXTWORD_DEBUG=1."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    args, _ = _flags.parse_known_args(head)
    return Settings(
        verbose=args.verbose or os.environ.get("NEXTWORD_VERBOSE") == "1",
        debug=args.debug or os.environ.get("NEXTWORD_DEBUG") == "1",
    )


def current() -> Settings:
    return _current


def start(argv: list[str]) -> Settings:
    """Sets up the console for a command line; call before TensorFlow or Beam is imported."""
    global _current
    found = settings_from(argv)
    if _nesting:  # e.g. `nextword cloud train --verbose` runs the trainer's own main
        found = Settings(found.verbose or _current.verbose, found.debug or _current.debug)
    _current = found
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        # A crash in native code is a signal, not an exception: this prints where each thread was (the stage
        # and its step) before the process dies, where the shell alone would print "Segmentation fault".
        faulthandler.enable(file=sys.__stderr__)
    if not found.verbose:
        # setdefault: a level the user exported on purpose wins.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _QuietImport())
    setup_logging(found.verbose)
    return found


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Marks a command as running, so that a command it starts keeps this one's settings."""
    global _nesting
    _nesting += 1
    try:
        yield
    finally:
        _nesting -= 1


def is_project_record(record: logging.LogRecord) -> bool:
    if record.name.split(".", 1)[0] in PROJECT_PACKAGES:
        return True
    # Bare logging.warning() calls log as "root": tell ours by the file they come from.
    return record.name == "root" and record.pathname.startswith(PROJECT_DIRS)


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if is_project_record(record):
            return True
        if record.levelno < logging.WARNING or record.exc_info:
            return False
        message = record.getMessage()
        return not any(record.name == name and message.startswith(start) for name, start in NOISE_MESSAGES)


class _Handler(logging.StreamHandler):
    """The one console handler (recognised when start() runs again)."""


def setup_logging(verbose: bool) -> None:
    """The console handler on the root logger: everything if verbose, else quiet (see the module's doc)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _Handler)), None)
    if handler is None:
        if root.handlers:  # as logging.basicConfig: someone else (pytest, a host program) owns the output
            return
        handler = _Handler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    handler.setStream(sys.stderr)  # the current one: tests swap sys.stderr between runs
    for f in list(handler.filters):
        handler.removeFilter(f)
    if not verbose:
        handler.addFilter(_QuietFilter())
    root.setLevel(logging.INFO)


def is_native_noise(line: str) -> bool:
    return line.rstrip("\n") == _NATIVE_BANNER or bool(_NATIVE_LOG.match(line))


@contextlib.contextmanager
def native_noise_dropped() -> Iterator[None]:
    """Captures what is written to file descriptor 2 in the block; writes it back less the native noise lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line for line in capture.read().decode("utf-8", "replace").splitlines(True) if not is_native_noise(line)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Runs `import tensorflow` (the first one) inside native_noise_dropped()."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The real loader again, for anything that later asks the module or its spec for it.
        module.__loader__ = module.__spec__.loader = self._loader
        with native_noise_dropped():
            self._loader.exec_module(module)
