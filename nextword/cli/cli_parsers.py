"""Every command's argument parser, in a module that imports neither TensorFlow nor Beam.

`nextword <command> --help` is answered from here before the command's own
module (and with it TensorFlow or Beam, seconds of start-up) is imported; the
commands parse their arguments with the same parsers, so the help lists
exactly what they accept.
"""

from __future__ import annotations

import argparse

# command -> one line for `nextword --help`
SUMMARIES = {
    "preprocess": "text corpus -> vocabulary and TFRecord windows (a Beam job)",
    "train": "windows -> checkpoints, metrics.json, curves.png and the model bundle",
    "evaluate": "the best validation epoch's weights on the valid and test splits, merged into metrics.json",
    "export": "the best validation epoch's weights exported again as the bundle, or for a device (--format tflite)",
    "predict": "next words for texts given as arguments, or the Beam job over predict.input_glob",
    "baseline": "the n-gram baseline on the same data, for comparison (a Beam job)",
    "generate": "continue a text word by word with the bundle (greedy or sampled)",
    "cloud": "launch files, the scheduled training run, and the runs on Cloud Storage",
}

# An example of --set for each command's help: a key it reads.
SET_EXAMPLES = {
    "preprocess": "preprocess.num_shards=8",
    "train": "train.epochs=3",
    "evaluate": "train.model_dir=runs/demo/model",
    "export": "train.model_dir=runs/demo/model",
    "predict": "predict.top_k=10",
    "baseline": "baseline.order=3",
    "generate": "predict.bundle_dir=runs/demo/model/bundle",
    "cloud": "cloud.runs_dir=gs://BUCKET/nextword/runs",
}

# Commands whose unknown options go to Beam; the others refuse them.
BEAM_COMMANDS = ("preprocess", "predict", "baseline")

CLOUD_SUMMARIES = {
    "render": "write the Vertex AI / Dataflow specs and scripts for the config (into --out)",
    "train": "train into a dated run directory under cloud.runs_dir, then promote it if it passes the bar",
    "runs": "list the runs with their test perplexity and which one is LATEST",
    "promote": "re-check one run against the promotion bar and point LATEST at it if it passes",
    "latest": "print the promoted bundle's directory (for nextword predict)",
}

CONSOLE_HELP = """\
console:
  Only nextword's own lines, progress bars, results and warnings that need
  action are shown; --verbose shows TensorFlow's and Beam's logs too.
  A failure prints one line `error: ...` and exits 1 (Ctrl-C: exit 130);
  --debug or NEXTWORD_DEBUG=1 prints the traceback as well."""

BEAM_HELP = """\
Beam options (any other option is passed to Beam's PipelineOptions), e.g.:
  --runner DataflowRunner      run on Dataflow with the config's cloud section
                               (default: the local FnApiRunner)
  --direct_running_mode MODE   local engine: in_memory (default) or multi_processing
  --direct_num_workers N       local workers for multi_processing
  --project, --region, --temp_location, --max_num_workers, --machine_type
                               Dataflow settings; they override the config's cloud section
  --dry_run / --template_location PATH
                               build the job only (nothing runs, outputs are left alone)"""


def add_console_flags(p: argparse.ArgumentParser) -> None:
    """--verbose and --debug: accepted by every command (nextword/cli/console.py reads them first)."""
    p.add_argument("--verbose", action="store_true", help="show third-party logs (TensorFlow, Beam, absl) as well")
    p.add_argument("--debug", action="store_true", help="print the full traceback of a failure (also NEXTWORD_DEBUG=1)")


def _config_parser(prog: str, description: str, epilog: str, set_example: str) -> argparse.ArgumentParser:
    # No abbreviations: with options passed through to Beam, `--se` or `--verb`
    # could silently mean one of ours or one of Beam's.
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML config file (defaults apply where it is silent)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key by its dotted path, e.g. --set {set_example} (repeatable)",
    )
    add_console_flags(p)
    return p


def stage(command: str) -> argparse.ArgumentParser:
    """The parser of `nextword <command>` (preprocess, train, evaluate, export, predict, baseline)."""
    if command not in SUMMARIES or command == "cloud":
        raise ValueError(f"{command}: not a stage; choose one of {', '.join(c for c in SUMMARIES if c != 'cloud')}")
    epilog = BEAM_HELP + "\n\n" + CONSOLE_HELP if command in BEAM_COMMANDS else CONSOLE_HELP
    description = f"nextword {command}: {SUMMARIES[command]}."
    if command in BEAM_COMMANDS:
        description += "\nOptions not listed below are passed to Beam (see the end)."
    else:
        description += "\nIt takes no Beam options: an option not listed below is an error."
    p = _config_parser(f"nextword {command}", description, epilog, SET_EXAMPLES[command])
    if command == "predict":
        p.usage = "nextword predict [TEXT | FILE ...] [--context line|document] [options]"
        p.description += (
            "\n\nWith TEXT arguments (before any option), prints the top-k next words of each\n"
            'from predict.bundle_dir, e.g. nextword predict "some of them looks like";\n'
            "a FILE argument (an existing file) gets each line's perplexity and the file's.\n"
            "Beam options need no TEXT. Without TEXT, runs the Beam job over predict.input_glob."
        )
        p.add_argument(
            "--context",
            choices=("line", "document"),
            help="score each line alone, or with the lines before it as context (= --set predict.context=...)",
        )
    if command == "evaluate":
        p.add_argument(
            "--dynamic", action="store_true", help="also dynamic evaluation (the weights adapt to the text already "
            "scored; docs/quality.md): metrics.json's \"dynamic\", at several times the scoring time"
        )  # fmt: skip
    if command == "export":
        p.add_argument(
            "--serving-dir",
            metavar="DIR",
            help="write the bundle as DIR/<version>/ for TF Serving or Vertex AI (version: the highest there + 1), "
            "instead of train.model_dir/bundle",
        )
        p.add_argument(
            "--format", choices=("bundle", "tflite"), default="bundle", help="bundle: the SavedModel (default); "
            "tflite: TensorFlow Lite on word ids for a device, with its vocabulary (docs/on_device.md)"
        )  # fmt: skip
        p.add_argument(
            "--quantize", choices=("none", "float16", "int8"), default="none",
            help="with --format tflite: the weights in float32 (none, the default), float16 or int8 (dynamic range)"
        )  # fmt: skip
        p.add_argument("--out", metavar="DIR", help="with --format tflite: the folder (default train.model_dir/tflite)")
    if command == "generate":
        p.usage = "nextword generate TEXT [--words N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [options]"
        p.add_argument("text", help="the text to continue (normalized as in training)")
        p.add_argument("--words", type=int, default=20, help="words to add at most (default 20)")
        p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampled")
        p.add_argument("--top-k", type=int, default=0, help="sample only among the K most likely words (0: all)")
        p.add_argument(
            "--top-p", type=float, default=1.0, help="sample only among the most likely words whose probability "
            "reaches P (nucleus sampling; 1: all, the default)"
        )  # fmt: skip
        p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text (default 0)")
        p.add_argument("--allow-unknown", action="store_true", help="let the unknown-word symbol be generated")
    return p


def _command_lines(summaries: dict[str, str]) -> str:
    """One aligned line per command: name, then its summary."""
    width = max(map(len, summaries))
    return "\n".join(f"  {name:<{width}}  {summary}" for name, summary in summaries.items())


def cloud_overview() -> str:
    """`nextword cloud --help`: the cloud commands, one line each."""
    return (
        f"usage: nextword cloud {{{','.join(CLOUD_SUMMARIES)}}} [options]\n\n"
        f"{SUMMARIES['cloud']}.\n\ncommands:\n" + _command_lines(CLOUD_SUMMARIES) + "\n\n"
        "nextword cloud <command> --help shows the command's options.\n"
    )


def cloud(command: str) -> argparse.ArgumentParser:
    """The parser of `nextword cloud <command>` (none of them takes Beam options)."""
    if command not in CLOUD_SUMMARIES:
        raise ValueError(f"{command}: not a cloud command; choose one of {', '.join(CLOUD_SUMMARIES)}")
    p = _config_parser(
        f"nextword cloud {command}",
        f"nextword cloud {command}: {CLOUD_SUMMARIES[command]}.",
        CONSOLE_HELP,
        SET_EXAMPLES["cloud"],
    )
    if command == "render":
        p.add_argument("--out", required=True, help="folder for the rendered files")
    if command == "promote":
        p.add_argument("--run-dir", required=True, help="gs:// run directory to check against the bar")
    return p


def overview() -> str:
    """`nextword --help`: the commands, one line each."""
    return (
        f"usage: nextword {{{','.join(SUMMARIES)}}} [options]\n\n"
        "Next-word prediction: Beam preprocessing -> Keras LSTM training -> Beam batch prediction.\n\n"
        "commands:\n" + _command_lines(SUMMARIES) + "\n\n"
        "nextword <command> --help shows the command's options; every command takes\n"
        "--config, --set KEY=VALUE, --verbose and --debug.\n\n" + CONSOLE_HELP + "\n"
    )


def wants_help(argv: list[str]) -> bool:
    """True when argparse would print help for `argv` (-h/--help before any `--`)."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    return "-h" in head or "--help" in head
