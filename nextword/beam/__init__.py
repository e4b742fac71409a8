"""Helpers every Beam stage shares: the job around a pipeline, progress counters."""
