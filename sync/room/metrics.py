"""Server health as Prometheus metrics: an Extension plus hooks on the log and compactor.

Counters move on events (room hooks, log batches, compactions, closes); gauges that
describe the current state (connections, rooms, queued bytes) are read only when
scraped. The counters of every update and awareness message are plain integers read at
scrape time too: a prometheus_client counter takes a lock on each increment. Every
server (app) has its own `CollectorRegistry`, so several servers in one process never
share numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blackboard.persistence.compaction import CompactionResult
from blackboard.sync.room.extensions import Extension
from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.wire import close_codes

if TYPE_CHECKING:
    import asyncio

    from blackboard.persistence.compaction_worker import CompactionWorker
    from blackboard.persistence.update_log import UpdateLog
    from blackboard.sync.room.connection import Connection
    from blackboard.sync.room.room import Room
    from blackboard.sync.room.rooms import RoomManager
    from blackboard.sync.rules.correction import Correction

# Close codes that refuse or cut off a client (not a normal goodbye), by name.
REFUSALS = {
    close_codes.TOO_BIG: "message_too_big",
    close_codes.INTERNAL_ERROR: "internal_error",
    close_codes.TRY_AGAIN_LATER: "try_again_later",
    close_codes.MALFORMED: "malformed",
    close_codes.UNAUTHORIZED: "unauthorized",
    close_codes.FORBIDDEN: "forbidden",
    close_codes.UNKNOWN_PROJECT: "unknown_project",
    close_codes.DOCUMENT_TOO_LARGE: "document_too_large",
    close_codes.RATE_LIMITED: "rate_limited",
}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _HotCounts:
    """Counted on every update or awareness message (the event loop's thread only)."""

    updates_in: dict[Source, int] = field(default_factory=lambda: dict.fromkeys(Source, 0))
    update_bytes_in: dict[Source, int] = field(default_factory=lambda: dict.fromkeys(Source, 0))
    updates_out: int = 0
    update_bytes_out: int = 0
    awareness_in: int = 0
    joins: int = 0

    def families(self) -> Iterator[Metric]:
        for name, help_text, by_source in (
            (
                "blackboard_updates_in",
                "Updates that changed a live document, by where they came from",
                self.updates_in,
            ),
            ("blackboard_update_bytes_in", "Bytes of those updates", self.update_bytes_in),
        ):
            family = CounterMetricFamily(name, help_text, labels=["source"])
            for source, count in by_source.items():
                family.add_metric([source.value], count)
            yield family
        for name, help_text, value in (
            ("blackboard_updates_out", "Update messages queued to clients", self.updates_out),
            (
                "blackboard_update_bytes_out",
                "Bytes of update messages queued to clients",
                self.update_bytes_out,
            ),
            ("blackboard_awareness_in", "Awareness updates accepted", self.awareness_in),
            ("blackboard_joins", "Connections that joined a room", self.joins),
        ):
            yield CounterMetricFamily(name, help_text, value=value)


class _LiveState(Collector):
    """Gauges computed at scrape time from the rooms and the log, and the hot counters."""

    def __init__(self, rooms: RoomManager, update_log: UpdateLog, counts: _HotCounts) -> None:
        self._rooms = rooms
        self._log = update_log
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        yield from self._counts.families()
        rooms = list(self._rooms.rooms.values())
        connections = [c for room in rooms for c in room.connections]
        yield GaugeMetricFamily(
            "blackboard_connections", "Open client sockets in rooms", value=len(connections)
        )
        yield GaugeMetricFamily("blackboard_rooms_loaded", "Rooms in memory", value=len(rooms))
        yield GaugeMetricFamily(
            "blackboard_send_queue_bytes",
            "Bytes waiting in client outboxes (delivery queue depth)",
            value=sum(c.queued_bytes for c in connections),
        )
        yield GaugeMetricFamily(
            "blackboard_log_pending_updates",
            "Accepted updates waiting for their commit",
            value=self._log.pending,
        )
        yield CounterMetricFamily(
            "blackboard_log_commit_failures",
            "Log batch commits that failed and were retried",
            value=self._log.stats.failures,
        )


class ServerMetrics(Extension):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.counts = _HotCounts()
        self.repairs = Counter(
            "blackboard_repairs",
            "Values the server repaired after a rule-breaking update, by rule",
            ["rule"],
            registry=r,
        )
        self.refusals = Counter(
            "blackboard_refusals",
            "Sockets closed by the server with a refusal code",
            ["code", "reason"],
            registry=r,
        )
        self.log_batch_rows = Histogram(
            "blackboard_log_batch_rows",
            "Updates per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=r,
        )
        self.log_commit_seconds = Histogram(
            "blackboard_log_commit_seconds",
            "Duration of one group commit",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.compaction_seconds = Histogram(
            "blackboard_compaction_seconds",
            "Duration of one compaction (its count is the number of runs)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.loop_lag_seconds = Histogram(
            "blackboard_event_loop_lag_seconds",
            "How late the event loop ran a timer that was due (sampled every 10 ms): "
            "a stall delays every room's deliveries as long",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.compacted_rows = Counter(
            "blackboard_compacted_rows", "Log rows folded into snapshots", registry=r
        )
        self.budget_ops = Counter(
            "blackboard_budget_ops",
            "Budget ops answered, by op and HTTP status (200, 409 insufficient_budget, ...)",
            ["op", "status"],
            registry=r,
        )
        self.budget_op_seconds = Histogram(
            "blackboard_budget_op_seconds",
            "From submitting a budget op to its committed (or replayed) reply",
            ["op"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

    def watch(self, rooms: RoomManager, update_log: UpdateLog, compactor: CompactionWorker) -> None:
        """Read the live state at scrape time; count every commit and compaction."""
        self.registry.register(_LiveState(rooms, update_log, self.counts))
        update_log.on_batch.append(self.observe_batch)
        compactor.on_done.append(self.observe_compaction)

    # --- hooks ----------------------------------------------------------------------

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.log_batch_rows.observe(rows)
        self.log_commit_seconds.observe(seconds)

    def observe_compaction(self, result: CompactionResult, seconds: float) -> None:
        self.compaction_seconds.observe(seconds)
        self.compacted_rows.inc(result.merged_rows)

    def observe_budget_op(self, op: str, status: int, seconds: float) -> None:
        self.budget_ops.labels(op, str(status)).inc()
        self.budget_op_seconds.labels(op).observe(seconds)

    def observe_close(self, code: int | None) -> None:
        """A socket the server closed (or saw close) with `code`; counts refusals only."""
        reason = REFUSALS.get(code) if code is not None else None
        if reason is not None:
            self.refusals.labels(str(code), reason).inc()

    def on_update(self, room: Room, update: bytes, origin: Origin) -> None:
        counts = self.counts
        counts.updates_in[origin.source] += 1
        counts.update_bytes_in[origin.source] += len(update)
        recipients = len(room.connections) - (origin.connection in room.connections)
        if recipients > 0:
            counts.updates_out += recipients
            counts.update_bytes_out += recipients * len(update)

    def on_awareness(self, room: Room, payload: bytes, origin: Origin) -> None:
        self.counts.awareness_in += 1

    def on_repair(
        self,
        room: Room,
        corrections: list[Correction],
        committed: asyncio.Future[int] | None,
        origin: Origin,
    ) -> None:
        for correction in corrections:
            if correction.record:  # as listed at /api/projects/{id}/corrections
                self.repairs.labels(correction.rule).inc()

    def on_join(self, room: Room, connection: Connection) -> None:
        self.counts.joins += 1
