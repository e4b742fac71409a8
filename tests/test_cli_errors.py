"""The error boundary: a failure a user can cause is one line `error: ...`, exit 1; --debug adds the traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nextword import cli
from nextword.cli import cli_common
from tests.support import trainer as trainer_support

REPO = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NEXTWORD_DEBUG", "NEXTWORD_VERBOSE")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _raiser(err: BaseException):
    def run(argv: list[str]) -> None:
        raise err

    return run


@pytest.mark.unit
@pytest.mark.parametrize(
    "err, expected",
    [
        (ZeroDivisionError("float division by zero"), "error: ZeroDivisionError: float division by zero (rerun with"),
        (OverflowError("cannot convert float infinity to integer"), "error: OverflowError: cannot convert float"),
        (RuntimeError("resource exhausted\nsecond line"), "error: RuntimeError: resource exhausted (rerun with"),
        (FileNotFoundError("gs://b/x: no such file"), "error: FileNotFoundError: gs://b/x: no such file (rerun"),
        (MemoryError(), "error: out of memory: lower the sizes this command uses (train.per_replica_batch_size"),
    ],
)
def test_errors_raised_outside_our_checks_are_one_line_with_their_type(err, expected, capsys, monkeypatch):
    monkeypatch.delenv("NEXTWORD_DEBUG", raising=False)
    assert cli.guarded(_raiser(err), []) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith(expected) and stderr.count("\n") == 1, stderr


@pytest.mark.unit
def test_our_own_checks_keep_their_message_as_it_is(capsys):
    from nextword import config as config_lib

    assert cli.guarded(lambda argv: config_lib.load(None, ["train.epochs=zero"]), []) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and "train.epochs" in stderr and "Error:" not in stderr
    assert stderr.count("\n") == 1


@pytest.mark.unit
def test_debug_flag_and_environment_add_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv("NEXTWORD_DEBUG", raising=False)
    assert cli.guarded(_raiser(ZeroDivisionError("division by zero")), ["--debug"]) == 1
    stderr = capsys.readouterr().err
    assert "Traceback (most recent call last)" in stderr and stderr.rstrip().splitlines()[-1].startswith("error: ")

    monkeypatch.setenv("NEXTWORD_DEBUG", "1")
    assert cli.guarded(_raiser(ValueError("x: bad")), []) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err

    monkeypatch.delenv("NEXTWORD_DEBUG")
    assert cli.guarded(_raiser(ValueError("x: bad")), []) == 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.unit
@pytest.mark.parametrize(
    "err, code, line",
    [
        (KeyboardInterrupt(), 130, "interrupted (Ctrl-C): rerun the same command"),
        (cli_common.Stopped("stopped at step 7 for SIGTERM; checkpoint written", signal.SIGTERM), 143,
         "preempted: stopped at step 7 for SIGTERM; checkpoint written"),
        (cli_common.Stopped("stopped during export for SIGINT; rerun", signal.SIGINT), 130,
         "interrupted: stopped during export for SIGINT; rerun"),
    ],
    ids=["ctrl-c", "sigterm-stop", "ctrl-c-stop"],
)  # fmt: skip
def test_ctrl_c_and_signal_stops_are_one_line_and_exit_128_plus_signal(capsys, err, code, line):
    assert cli.guarded(_raiser(err), []) == code
    stderr = capsys.readouterr().err
    assert stderr.startswith(line) and stderr.count("\n") == 1, stderr


@pytest.mark.unit
def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        cli.guarded(_raiser(KeyError("a bug, not the user's")), [])


def _preprocess_argv(corpus: Path, out: Path) -> list[str]:
    return ["preprocess", "--set", f"preprocess.corpus_glob={corpus}/*.txt", "--set", f"preprocess.output_dir={out}"]


# A worker error inside Beam: Beam logs it with a traceback, then re-raises it with the step appended.
_BEAM_FAILURE = """
import sys
from beam_preprocess import core
def count_tokens(*args, **kwargs):
    raise ZeroDivisionError("float division by zero")
core.count_tokens = count_tokens
from nextword import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("debug", [False, True])
def test_an_error_inside_a_beam_worker_is_one_line_without_beams_wrapping_or_log(write_files, tmp_path, debug):
    argv = _preprocess_argv(write_files({"a.txt": "the cat sat\n" * 50}), tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-c", _BEAM_FAILURE, *argv, *(["--debug"] if debug else [])],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.rstrip().splitlines()[-1]
    assert last == "error: ZeroDivisionError: float division by zero (rerun with --debug for the traceback)"
    assert "while running" not in last
    if debug:
        assert "Traceback (most recent call last)" in done.stderr
    else:
        assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr


# A real SIGINT (what Ctrl-C sends) at a chosen point of `nextword preprocess` (tests/support/trainer.py arm_kill).
# The child takes Ctrl-C as a terminal's foreground job does: started from a background job of a
# non-interactive shell (`cmd &`, as some CI wrappers run the suite) it would inherit SIGINT ignored.
_CTRL_C = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from tests.support.trainer import arm_kill
arm_kill(sys.argv[1])
from nextword import cli
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.e2e
@pytest.mark.parametrize(
    "at",
    ["beam_preprocess.core:count_tokens@1:before:SIGINT", "nextword.cli:entry_point@1:after:SIGINT"],
    ids=["in-a-beam-step", "before-the-stage-boundary"],
)
def test_ctrl_c_in_a_command_exits_130_with_one_line_interrupted(write_files, tmp_path, at):
    argv = _preprocess_argv(write_files({"a.txt": "the cat sat\n" * 50}), tmp_path / "o")
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C, at, *argv], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300
    )
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.rstrip().splitlines()[-1].startswith("interrupted (Ctrl-C): rerun the same command")
    assert "Traceback" not in done.stderr and not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.e2e
def test_a_corrupt_training_shard_is_one_line_naming_the_kind_and_the_fix(synthetic, tmp_path):
    data = Path(shutil.copytree(synthetic, tmp_path / "data"))
    for shard in (data / "train").iterdir():  # every shard: whichever the input reads first fails
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 10])
    argv = [
        "train",
        "--set", f"train.data_dir={data}",
        "--set", f"train.model_dir={tmp_path}/model",
        "--set", "train.epochs=1",
        *trainer_support.TINY,
    ]  # fmt: skip
    for debug in (False, True):
        done = subprocess.run(
            [sys.executable, "-m", "nextword.cli", *argv, *(["--debug"] if debug else [])],
            capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        last = done.stderr.rstrip().splitlines()[-1]
        assert last.startswith("error: DataLossError: ") and "nextword preprocess" in last, last
        assert "Graph execution error" not in last and "[[" not in last
        assert ("Traceback (most recent call last)" in done.stderr) == debug


@pytest.mark.beam
@pytest.mark.parametrize("blocked", ["out", "out/inner"])
def test_an_output_path_that_is_a_file_is_one_line_naming_the_key(write_files, tmp_path, capsys, blocked):
    from beam_preprocess import pipeline

    corpus = write_files({"a.txt": "the cat sat\n" * 50})
    (tmp_path / "out").write_text("a user's file\n")
    argv = ["--set", f"preprocess.corpus_glob={corpus}/*.txt", "--set", f"preprocess.output_dir={tmp_path}/{blocked}"]
    assert cli.guarded(pipeline.run, argv) == 1
    stderr = capsys.readouterr().err
    assert stderr == (
        f"error: preprocess.output_dir: {tmp_path}/{blocked}: {tmp_path}/out is a file, not a directory; "
        "set preprocess.output_dir to a directory\n"
    )
    assert (tmp_path / "out").read_text() == "a user's file\n"
