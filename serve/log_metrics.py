"""The request log on ``/metrics``, read at scrape time (no task polls it):

- ``llmloop:request_log_queue_depth`` (gauge): records waiting for the writer, or in the batch it
  is writing now;
- ``llmloop:request_log_spool_bytes`` (gauge): bytes in the disk spool waiting for the database
  (grows while the database is down or the queue overflows; falls as the spool is replayed);
- ``llmloop:request_log_{submitted,written,spooled,db_errors,dead_lettered,lost,
  journal_errors}_total``
  (counters): ``feedback.log.LogStats`` of this server process since it started.

No labels: one series each.
"""

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmloop.feedback.log import LogStats, RequestLog

STATS_HELP = {
    "submitted": "Records handed to the request log while logging is on.",
    "written": "Rows the request log inserted into the database (spool replays included).",
    "spooled": "Records that went to the disk spool (database down or queue full).",
    "db_errors": "Failed database writes or migrations of the request log (each retried later).",
    "dead_lettered": "Records the database refused on their own (kept in the dead-letter file).",
    "lost": "Records neither written nor spooled (the spool itself failed, e.g. disk full).",
    "journal_errors": "Journal appends that failed (the record is still queued; a kill before "
    "it is written would lose it).",
}


class RequestLogCollector(Collector):
    def __init__(self, request_log: Callable[[], RequestLog | None]):
        """``request_log``: the app's log now (None before the lifespan opens it)."""
        self.request_log = request_log

    def collect(self) -> Iterator[Metric]:
        log = self.request_log()
        stats = log.stats if log is not None else LogStats()
        yield GaugeMetricFamily(
            "llmloop:request_log_queue_depth",
            "Request-log records waiting for the database writer (or in the batch it writes).",
            value=log.queue_depth if log is not None else 0,
        )
        yield GaugeMetricFamily(
            "llmloop:request_log_spool_bytes",
            "Bytes in the request log's disk spool, waiting for the database.",
            value=log.spool.num_pending_bytes() if log is not None else 0,
        )
        for name, help_text in STATS_HELP.items():
            yield CounterMetricFamily(
                f"llmloop:request_log_{name}", help_text, value=getattr(stats, name)
            )
