"""Monitoring over the request log: ``llmloop monitor report`` (aggregates, plots, drift against a
reference) and ``llmloop monitor watch`` (the same on a schedule, as Prometheus gauges).

Aggregates run in SQL (``aggregates.py``); only a bounded random sample of prompts per window is
read into Python, for the drift tests (``sample.py``, ``drift.py``).
"""
