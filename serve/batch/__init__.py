"""Batches: OpenAI's Files and Batch API on the server (``runner.BatchRunner`` runs the lines of
the database's batches through the app, ``dispatch.Dispatcher``), and ``llmloop batch``
(``cli.py``: the same lines offline, or submitted to a server). See docs/batch.md.
"""
