"""A Beam stage's job around its pipeline: config and Beam options from the command line, the local
runner made explicit, the run, and its commit marker written last and read back."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator

from nextword import config as config_lib
from nextword.cli import cli_common

# Beam 2.77's "DirectRunner" first tries to download the Prism runner, which
# cannot work offline; FnApiRunner is the DirectRunner's own local engine
# (in_memory or multi_processing via --direct_running_mode) without that attempt.
LOCAL_RUNNER = "FnApiRunner"


def parse(stage: str, argv: list[str] | None) -> tuple[config_lib.Config, list[str]]:
    """(config, remaining args for Beam) for one stage.

    With `--runner DataflowRunner`, the config's cloud section supplies the
    Dataflow options first (nextword/cloud/__init__.py); the command line's own come
    after them and win.
    """
    args, rest = cli_common.parser(stage).parse_known_args(argv)
    config = config_lib.load(args.config, args.overrides)
    from nextword import cloud

    if cloud.wants_dataflow(rest):
        rest = cloud.dataflow_args(config, cloud.job_name(stage)) + rest
    return config, rest


def pipeline_options(beam_args: list[str]):
    """Beam options from the command line, with the local runner made explicit."""
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner"):
        standard.runner = LOCAL_RUNNER
    # Our DoFns live in installed modules (setup_file ships the package), so workers import what they need;
    # the main session is never pickled for them.
    options.view_as(SetupOptions).save_main_session = False
    return options


@contextlib.contextmanager
def pipeline(beam_args: list[str], test_pipeline=None) -> Iterator:
    """A pipeline that runs (and is waited for) when the block exits."""
    import apache_beam as beam

    if test_pipeline is not None:
        with test_pipeline as p:
            yield p
        return
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        yield p


def run_job(stage: str, argv: list[str] | None, test_pipeline, build, commit_marker, output_dir) -> dict:
    """Parses the command line, runs `build(p, config)`'s pipeline and returns the job's commit marker.

    commit_marker(config) is the path of the JSON file the job writes last; {}
    when Beam only built the job (--dry_run, a template): nothing ran.
    output_dir(config) is (folder, its config key): the job holds its lock
    (nextword/storage/job_lock.py) from before the pipeline is built until it ends.
    """
    from nextword import cloud, storage
    from nextword.storage.job_lock import JobLock

    config, beam_args = parse(stage, argv)
    launch_only = cloud.launch_only(pipeline_options(beam_args) if test_pipeline is None else test_pipeline.options)
    with contextlib.ExitStack() as held:
        if not launch_only:  # building a template runs nothing and leaves the folder alone
            folder, key = output_dir(config)
            # A job refused before it writes anything leaves no folder behind (the lock's goes first).
            held.callback(storage.remove_empty_folders, storage.makedirs(folder, key))
            held.enter_context(JobLock(folder, key, f"nextword {stage}").held())
        with pipeline(beam_args, test_pipeline) as p:
            build(p, config)
    if launch_only:
        return {}
    return json.loads(storage.read_text(commit_marker(config)))


def write_last(p, label: str, write_fn, **side_inputs):
    """One call of `write_fn` after every side input is complete: the step that writes a commit marker."""
    import apache_beam as beam

    return p | f"{label}Trigger" >> beam.Create([None]) | label >> beam.Map(write_fn, **side_inputs)


def sum_counters(counters: Iterable[Counter]) -> Counter:
    """Adds up Counters (a CombineGlobally function for per-file or per-line figures).

    Counter.update, not `+`: `+` drops sums at or below zero, and log-probabilities are negative.
    """
    total: Counter = Counter()
    for counter in counters:
        total.update(counter)
    return total
