"""Admission by queue time: no client waits silently past ``--max-queue-time``.

The engine runs ``max_num_seqs`` sequences at once and queues the rest first come, first served,
so the k-th sequence submitted starts once ``k - max_num_seqs`` sequences have finished, whichever
they were. The server counts both, and measures how fast sequences finish while the engine is
full (an exponential moving average of the interval between finishes). A request whose wait,
estimated as (sequences ahead of it beyond the running batch) × (that interval), exceeds the
bound is refused at once with 503 and ``Retry-After``; one that is admitted but still has no slot
when the bound has passed is aborted with the same 503 (an SSE error event once streaming).
Before the engine has ever been full there is nothing to estimate from: requests are admitted,
and the timeout still applies. (300 simultaneous 64-token streams on a 2-core CPU left 100
clients waiting 600 s for a first byte before this.)
"""

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable

from llmloop.serve.errors import OverloadedError

_SMOOTHING = 0.2
"""Weight of the newest interval in the moving average: about the last ten finishes count."""


class Admission:
    def __init__(
        self,
        max_queue_time_s: float,
        max_num_seqs: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_queue_time_s = max_queue_time_s
        self.max_num_seqs = max_num_seqs
        self._clock = clock
        self._num_submitted = 0
        """Sequences ever submitted; a request's place in the queue is this count at submission."""
        self._num_finished = 0
        """Sequences ever finished or aborted."""
        self.finish_interval_s: float | None = None
        """Seconds between sequence finishes while the engine was full (moving average)."""
        self._last_mark = clock()
        """The last finish, or the moment the engine became full, whichever came later."""
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        """Heap of (finishes needed to start, tie-break, future set when started)."""
        self._tie = itertools.count()
        self.num_interactive = 0
        """Sequences of interactive requests (priority 0) in flight; the rest are batch lines."""
        self._last_interactive = -math.inf

    @property
    def num_in_flight(self) -> int:
        """Sequences submitted and not finished: running, or queued in the engine."""
        return self._num_submitted - self._num_finished

    def estimated_wait_s(self, num_seqs: int) -> float:
        """How long ``num_seqs`` new interactive sequences would wait for the last of them to
        start. Batch lines are not ahead of them: vLLM's priority scheduling starts interactive
        requests first, and the batch worker keeps few lines in flight while they run."""
        num_ahead = self.num_interactive + num_seqs - self.max_num_seqs
        if num_ahead <= 0 or self.finish_interval_s is None:
            return 0.0
        return num_ahead * self.finish_interval_s

    def interactive_idle_s(self) -> float:
        """Seconds since an interactive request was last in flight (0 while one is)."""
        return 0.0 if self.num_interactive else self._clock() - self._last_interactive

    def check(self, num_seqs: int) -> None:
        """Refuse (503 + Retry-After) a request that could not start within the bound."""
        wait_s = self.estimated_wait_s(num_seqs)
        if wait_s > self.max_queue_time_s:
            raise OverloadedError(
                f"the server is at capacity: this request would wait about {wait_s:.0f} s to "
                f"start, more than its {self.max_queue_time_s:g} s bound; retry later",
                code="server_overloaded",
                headers={"Retry-After": str(max(1, math.ceil(wait_s - self.max_queue_time_s)))},
            )

    def enter(self, num_seqs: int, priority: int = 0) -> int:
        """Count ``num_seqs`` sequences submitted to the engine; the ticket for ``until_started``."""
        if priority == 0:
            self.num_interactive += num_seqs
            self._last_interactive = self._clock()
        if self.num_in_flight < self.max_num_seqs <= self.num_in_flight + num_seqs:
            self._last_mark = self._clock()  # the engine becomes full: intervals count from now
        self._num_submitted += num_seqs
        return self._num_submitted - self.max_num_seqs

    def leave(self, num_seqs: int, priority: int = 0) -> None:
        """Count ``num_seqs`` sequences finished (or aborted): the next ones in line start."""
        now = self._clock()
        if priority == 0:
            self.num_interactive -= num_seqs
            self._last_interactive = now
        if self.num_in_flight >= self.max_num_seqs:
            interval = (now - self._last_mark) / num_seqs
            previous = self.finish_interval_s
            self.finish_interval_s = (
                interval
                if previous is None
                else _SMOOTHING * interval + (1 - _SMOOTHING) * previous
            )
        self._last_mark = now
        self._num_finished += num_seqs
        while self._waiting and self._waiting[0][0] <= self._num_finished:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)

    async def until_started(self, ticket: int) -> None:
        """Return once the sequences of ``ticket`` have their place in the running batch."""
        if ticket <= self._num_finished:
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (ticket, next(self._tie), future))
        await future

    def timed_out(self) -> OverloadedError:
        return OverloadedError(
            f"the request waited {self.max_queue_time_s:g} s in the queue without starting and "
            "was aborted; the server is at capacity, retry later",
            code="queue_timeout",
            headers={"Retry-After": str(max(1, math.ceil(self.max_queue_time_s)))},
        )
