"""The `nextword` console script: one subcommand per stage, and the one error boundary.

    nextword preprocess --config configs/local.yaml
    nextword train --config configs/local.yaml
    nextword predict "some of them looks like"

`--help` is answered from nextword/cli/cli_parsers.py before a stage's module is
imported (no TensorFlow or Beam: well under a second); the console is set up
(nextword/cli/console.py) before the stage's module is imported too.
"""

from __future__ import annotations

import importlib
import re
import signal
import sys
import traceback
from collections.abc import Callable

from nextword import errors
from nextword.cli import cli_common, cli_parsers, console

# subcommand -> "module" whose `main(argv)` runs it, or "module:function"
SUBCOMMANDS = {
    "preprocess": "beam_preprocess.__main__",
    "train": "trainer.__main__",
    "evaluate": "trainer.commands:evaluate",
    "export": "trainer.commands:export",
    "predict": "batch_predict.__main__",
    "baseline": "baseline.__main__",
    "generate": "batch_predict.generate",
    "cloud": "nextword.cloud.cloud_cli",
}
# Commands under a subcommand whose module is a stage's: `nextword cloud train` runs the trainer, and the
# shared package never imports a stage.
NESTED_SUBCOMMANDS = {("cloud", "train"): "trainer.cloud_train"}

# The shell's code for "terminated by Ctrl-C" (128 + SIGINT).
EXIT_INTERRUPTED = cli_common.SIGNAL_EXIT_BASE + signal.SIGINT
INTERRUPTED_LINE = (
    "interrupted (Ctrl-C): rerun the same command to go on "
    "(training resumes from its last checkpoint, prediction from its committed ranges)"
)

# Failures a user can cause (a bad config, a missing or corrupt file, a full disk,
# numbers that overflow, an empty split): one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError, ArithmeticError, MemoryError)

# What a MemoryError (Python's, from any stage) asks of the user: the size keys that bound memory.
MEMORY_HINT = (
    "out of memory: lower the sizes this command uses (train.per_replica_batch_size, train.model.units, "
    "predict.max_batch_tokens, predict.max_line_bytes, preprocess.read_chunk_bytes, preprocess.text.max_size, "
    "baseline.memory_budget_mb) or run it on a machine with more memory"
)

# Beam re-raises a worker's error as the same type with this appended to its message.
_BEAM_STEP = re.compile(r"\s*\[while running '[^']*'\]\s*$")


def _tf_op_error() -> type | None:
    """tf.errors.OpError when TensorFlow is loaded; never imports it."""
    errors = sys.modules.get("tensorflow.python.framework.errors_impl")
    return getattr(errors, "OpError", None)


def is_user_error(err: BaseException) -> bool:
    op_error = _tf_op_error()
    return isinstance(err, USER_ERRORS) or (op_error is not None and isinstance(err, op_error))


# What a TensorFlow error of each kind asks of the user (the op's message names neither file nor fix).
OP_ERROR_HINTS = {
    "DataLossError": "a data file is corrupt or truncated: re-create it, e.g. nextword preprocess for train.data_dir",
    "NotFoundError": "a file or directory is missing: check the paths in the config",
    "PermissionDeniedError": "no permission for a file: check its owner or the bucket's IAM",
    "ResourceExhaustedError": "out of memory or disk: free space, or lower train.per_replica_batch_size",
    "OutOfRangeError": "a dataset ended early: check the data directory's shards",
}


def _op_message(err: BaseException) -> str:
    """A TensorFlow error's own text: without "Graph execution error:", the Python frames and the node names."""
    lines = str(getattr(err, "message", err)).splitlines()
    kept = [
        line.strip()
        for line in lines
        if line.strip()
        and line.strip() != "Graph execution error:"
        and not line.startswith(("Detected at node", "  File "))
        and not line.strip().startswith("[[")
    ]
    return kept[0] if kept else type(err).__name__


def _raised_in_project(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(console.PROJECT_DIRS)


def error_line(err: BaseException) -> str:
    """The one line printed for a user error: its message's first line, without Beam's wrapping.

    Our own checks' messages name the file or key and the fix; an error raised
    elsewhere (TensorFlow, Beam, Python's arithmetic) also gets its type, which
    says what kind of failure its message is about, and where the detail is.
    """
    original = err
    # Beam's re-raise: the same type, our message plus the step; the worker's error is its __context__.
    while _BEAM_STEP.search(str(original)) and type(original.__context__) is type(original):
        original = original.__context__
    if isinstance(original, MemoryError):
        return MEMORY_HINT
    op_error = _tf_op_error()
    if op_error is not None and isinstance(original, op_error):
        name = type(original).__name__
        hint = OP_ERROR_HINTS.get(name, "rerun with --debug for the traceback")
        return f"{name}: {_BEAM_STEP.sub('', _op_message(original))} ({hint})"
    message = _BEAM_STEP.sub("", errors.one_line(original))
    if _raised_in_project(original) and not isinstance(original, ArithmeticError):
        return message
    return f"{type(original).__name__}: {message} (rerun with --debug for the traceback)"


def _is_interrupt(err: BaseException) -> bool:
    """Ctrl-C, also where Beam re-raised it from a step as RuntimeError("KeyboardInterrupt [while running ...]")."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        if isinstance(err, RuntimeError) and str(err).startswith(KeyboardInterrupt.__name__):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def guarded(run: Callable[[list[str]], object], argv: list[str]) -> int:
    """Runs a stage: a user error prints one line `error: ...` (and its traceback with --debug), exit code 1.

    Ctrl-C prints one line `interrupted ...` and exits 130; a stage stopped by a signal at a point that keeps
    its work (cli_common.Stopped: training's checkpoint) prints where, and exits 128 + the signal's number.
    """
    debug = console.current().debug or console.settings_from(argv).debug
    try:
        with console.running():
            run(argv)
    except cli_common.Stopped as stop:
        print(stop.line(), file=sys.stderr)
        return cli_common.SIGNAL_EXIT_BASE + stop.signum
    except (KeyboardInterrupt, Exception) as err:
        interrupted = _is_interrupt(err)
        if not interrupted and not is_user_error(err):
            raise
        if debug:
            traceback.print_exc()
        print(INTERRUPTED_LINE if interrupted else f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_INTERRUPTED if interrupted else 1
    return 0


def _help(argv: list[str]) -> str | None:
    """The help text `argv` asks for, or None when it asks for none."""
    if not argv or argv[0] in ("-h", "--help"):
        return cli_parsers.overview() if argv else None
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS or not cli_parsers.wants_help(rest):
        return None
    if command != "cloud":
        return cli_parsers.stage(command).format_help()
    if rest[0] in cli_parsers.CLOUD_SUMMARIES:
        return cli_parsers.cloud(rest[0]).format_help()
    return cli_parsers.cloud_overview()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = _help(argv)
    if text is not None:
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    if not argv or argv[0] not in SUBCOMMANDS:
        names = ",".join(SUBCOMMANDS)
        print(f"usage: nextword {{{names}}} [options]  (nextword --help for the commands)", file=sys.stderr)
        return 2
    nested = NESTED_SUBCOMMANDS.get(tuple(argv[:2]))
    words = 2 if nested else 1
    console.start(argv[words:])  # before the stage's module imports TensorFlow or Beam
    try:
        return entry_point(nested or SUBCOMMANDS[argv[0]])(argv[words:])
    except KeyboardInterrupt:  # before the stage's error boundary: while TensorFlow or Beam is imported
        print(INTERRUPTED_LINE, file=sys.stderr)
        return EXIT_INTERRUPTED


def run_stage(target: str | Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """A stage's `main`: the console set up from `argv` (None: sys.argv[1:]), then `target` run in guarded().

    A "module:function" target is imported only then, so TensorFlow and Beam read the console's settings.
    """
    argv = sys.argv[1:] if argv is None else argv
    console.start(argv)
    return guarded(entry_point(target) if isinstance(target, str) else target, argv)


def entry_point(target: str) -> Callable[[list[str]], int]:
    """The function a SUBCOMMANDS target names ("module" means its `main`); imports the module."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function or "main")


if __name__ == "__main__":
    sys.exit(main())
