"""Composition: the parts one server process runs, built from Settings, started and
stopped in order (stop flushes every room and the log before closing the store)."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from blackboard.persistence.compaction_worker import CompactionWorker
from blackboard.persistence.corrections import CorrectionStore
from blackboard.persistence.doc_worker import DocWorker
from blackboard.persistence.factory import make_store
from blackboard.persistence.fence import Fences
from blackboard.persistence.objects.object_store import ObjectStore, make_object_store
from blackboard.persistence.store import Store
from blackboard.persistence.update_log import UpdateLog
from blackboard.sync.authority.expiry_sweeper import ExpirySweeper
from blackboard.sync.authority.leases import LeaseStore
from blackboard.sync.authority.ledger import BudgetLedger
from blackboard.sync.authority.mirror import AuthorityMirror
from blackboard.sync.cluster.cross_instance import (
    CrossInstance,
    CrossInstancePolicy,
    new_instance_id,
)
from blackboard.sync.cluster.redis_bus import RedisBus
from blackboard.sync.projects.artifacts import Artifacts
from blackboard.sync.room.awareness import AwarenessLimits
from blackboard.sync.room.extensions import Extension
from blackboard.sync.room.load_plan import plan_load
from blackboard.sync.room.metrics import ServerMetrics
from blackboard.sync.room.rooms import RoomManager, RoomPolicy
from blackboard.sync.rules.correction_recorder import CorrectionRecorder
from blackboard.sync.wire.yjs_structs import held_back
from blackboard.web.loop_lag import LoopLagSampler
from blackboard.web.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: Store
    update_log: UpdateLog
    doc_worker: DocWorker
    compactor: CompactionWorker
    rooms: RoomManager
    ledger: BudgetLedger
    leases: LeaseStore
    mirror: AuthorityMirror
    sweeper: ExpirySweeper
    corrections: CorrectionRecorder
    objects: ObjectStore
    artifacts: Artifacts
    loop_lag: LoopLagSampler  # samples into `metrics`
    cross_instance: CrossInstance | None = None  # with BLACKBOARD_REDIS_URL
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    _running: AsyncExitStack | None = field(default=None, init=False, repr=False)

    @classmethod
    def build(cls, settings: Settings, extensions: list[Extension] | None = None) -> Services:
        store = make_store(settings.database_url, settings.data_dir, settings.database_pool_size)
        update_log = UpdateLog(store, max_pending_bytes=settings.limits.max_pending_log_bytes)
        doc_worker = DocWorker()
        compactor = CompactionWorker(
            store,
            timedelta(seconds=settings.history_retention_s),
            folder=doc_worker.fold,
            held=partial(doc_worker.run, held_back),
        )
        ledger = BudgetLedger(store.db, key_retention_s=settings.idempotency_ttl_s)
        leases = LeaseStore(store.db)
        mirror = AuthorityMirror(ledger, leases)
        metrics = ServerMetrics()
        corrections = CorrectionRecorder(CorrectionStore(store.db))
        instance_id = new_instance_id(settings.instance_id)
        cross_instance = _cross_instance(settings, store, update_log, instance_id)
        rooms = RoomManager(
            store,
            update_log,
            compactor,
            RoomPolicy(
                idle_unload_s=settings.room_idle_s,
                compact_after_rows=settings.compact_after_rows,
                compact_after_bytes=settings.compact_after_bytes,
                flush_timeout_s=settings.shutdown_timeout_s,
                max_document_bytes=settings.limits.max_document_bytes,
                awareness=AwarenessLimits(
                    ids_per_connection=settings.limits.max_awareness_ids_per_connection,
                    state_bytes=settings.limits.max_awareness_state_bytes,
                    states_per_room=settings.limits.max_awareness_states_per_room,
                ),
            ),
            [
                metrics,
                *(extensions or []),
                *([cross_instance] if cross_instance else []),
                mirror,
                corrections,
            ],
            planner=partial(doc_worker.run, plan_load),
        )
        metrics.watch(rooms, update_log, compactor)
        ledger.on_op.append(metrics.observe_budget_op)
        if cross_instance is not None:
            metrics.registry.register(cross_instance.metrics)
        mirror.bind(rooms)
        sweeper = ExpirySweeper(ledger, leases, mirror, Fences(store.db, holder=instance_id))
        objects = make_object_store(settings.data_dir, settings.s3)
        artifacts = Artifacts(
            objects,
            store,
            rooms,
            max_bytes=settings.max_artifact_bytes,
            orphan_grace_s=settings.orphan_grace_s,
        )
        return cls(
            settings,
            store,
            update_log,
            doc_worker,
            compactor,
            rooms,
            ledger,
            leases,
            mirror,
            sweeper,
            corrections,
            objects=objects,
            artifacts=artifacts,
            loop_lag=LoopLagSampler(metrics.loop_lag_seconds.observe),
            cross_instance=cross_instance,
            metrics=metrics,
        )

    async def start(self) -> None:
        """Start every part; each started part is stopped by `stop` in reverse order, or
        at once if a later one fails to start (so that order is the stop order: the
        rooms flush into the log, the log's commits queue corrections and reach the
        peers, and the store closes last)."""
        timeout = self.settings.shutdown_timeout_s
        async with AsyncExitStack() as started:
            # The embedded SQLite migrates itself; Postgres only through `blackboard
            # migrate`, so a server never starts on a database that is behind its code.
            await self.store.open(migrate_schema=self.store.backend == "sqlite")
            started.push_async_callback(self.store.close)
            self.doc_worker.start()
            started.push_async_callback(self.doc_worker.stop)
            self.compactor.start()
            started.push_async_callback(self.compactor.stop)
            if self.cross_instance is not None:
                await self.cross_instance.start()
                started.push_async_callback(self.cross_instance.stop)
            self.corrections.start()
            started.push_async_callback(self.corrections.stop, timeout)
            self.update_log.start()
            started.push_async_callback(self.update_log.stop, timeout)
            self.rooms.start()
            started.push_async_callback(self.rooms.close)
            started.push_async_callback(self.mirror.close, timeout)
            self.ledger.start()
            started.push_async_callback(self.ledger.stop, timeout)
            self.sweeper.start()
            started.push_async_callback(self.sweeper.stop)
            self.loop_lag.start()
            started.push_async_callback(self.loop_lag.stop)
            await self.objects.open()  # creates the bucket if missing
            self.artifacts.start(every_s=max(60.0, self.settings.orphan_grace_s / 4))
            started.push_async_callback(self.artifacts.stop)
            self._running = started.pop_all()

    async def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running.aclose()
        log.info("stopped: every accepted update is committed")


def _cross_instance(
    settings: Settings, store: Store, update_log: UpdateLog, instance_id: str
) -> CrossInstance | None:
    """Fan-out to the other instances through Redis, when Redis is configured."""
    if not settings.redis_url:
        return None
    bus = RedisBus(settings.redis_url, settings.redis_prefix, timeout_s=settings.redis_timeout_s)
    policy = CrossInstancePolicy(
        check_s=settings.catchup_check_s,
        poll_s=settings.catchup_poll_s,
        instance_ttl_s=settings.instance_ttl_s,
    )
    return CrossInstance(bus, store, update_log, instance_id=instance_id, policy=policy)
