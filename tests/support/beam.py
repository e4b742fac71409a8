"""Beam helpers for tests."""

from __future__ import annotations


def local_test_pipeline():
    """A TestPipeline on the local FnApiRunner (Beam's DirectRunner would first try Prism, offline)."""
    from apache_beam.testing.test_pipeline import TestPipeline

    from nextword.beam.pipelines import LOCAL_RUNNER

    return TestPipeline(runner=LOCAL_RUNNER)
