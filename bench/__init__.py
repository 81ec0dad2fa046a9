"""Benchmarks of trio-lanes, each next to a baseline measured in the same run.

Run them with ``python -m bench`` (``--quick`` for a smoke run, ``--only NAME`` for one,
``--json PATH`` to keep the figures). They are not tests: nothing here runs under pytest.

Every figure is the median of ``--repeat`` runs (default 5), and every run of the lane system
is paired with a run of its baseline right before or after it, so ratios stay meaningful on a
shared, noisy machine even when absolute figures drift.
"""
