"""A room: one project's live document and the connections editing it.

The path of a client update through the room, in order:
validate (shadow doc, `sync.rules.validation`) -> apply to the live Doc -> review it against
the document rules (`sync.rules.repair`) -> append to the log (`persistence.update_log`, group
commit) and fan out to the other connections (`sync.room.connection` outboxes) -> write its
repair, if any (committed with it) -> acknowledge once committed (`blackboard.sync.room.acks`).
Everything here is synchronous on the event loop, so the Doc needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pycrdt import Doc, Subscription, TransactionEvent

from blackboard.persistence.update_log import UpdateLog
from blackboard.persistence.yrs_guard import YrsError, apply_update, yrs_guard
from blackboard.sync.room.awareness import AwarenessLimits, AwarenessStates
from blackboard.sync.room.awareness_fanout import AwarenessFanout, awareness_messages
from blackboard.sync.room.connection import Connection
from blackboard.sync.room.doc_size import DocumentSize, DocumentTooLarge
from blackboard.sync.room.extensions import Extension, implementing
from blackboard.sync.room.fresh_join import FreshJoinReply
from blackboard.sync.room.origin import SERVER_ACTOR, Origin, Source
from blackboard.sync.room.step2_cache import Step2Cache
from blackboard.sync.rules.correction import Correction, write_corrections
from blackboard.sync.rules.lattice import LatticeTracker
from blackboard.sync.rules.repair import DocumentRules
from blackboard.sync.rules.repair_limit import RepairPolicy
from blackboard.sync.rules.validation import MalformedUpdate, ShadowValidator
from blackboard.sync.wire import close_codes
from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    ProtocolError,
    QueryAwarenessMessage,
    SyncMessage,
    SyncType,
    check_awareness_state,
    decode_awareness,
    decode_message,
    encode_awareness,
    permission_denied,
    read_awareness,
    sync_step1,
    sync_step2,
    sync_update,
)
from blackboard.sync.wire.yjs_encoding import EMPTY_STATE_VECTOR, decode_state_vector
from blackboard.sync.wire.yjs_structs import decode_update

log = logging.getLogger(__name__)


class Room:
    def __init__(
        self,
        project_id: str,
        doc: Doc,
        seq: int,
        *,
        update_log: UpdateLog,
        extensions: list[Extension],
        on_tail_grown: Callable[[Room], None],
        max_document_bytes: int = 64 * 1024 * 1024,
        size_estimate: int = 0,
        lattice: LatticeTracker | None = None,
        shadow: Doc | None = None,
        repair_policy: RepairPolicy | None = None,
        awareness_limits: AwarenessLimits | None = None,
    ) -> None:
        self.project_id = project_id
        self.doc = doc
        self.seq = seq  # last committed seq
        self.tail_rows = 0  # rows committed since load (compaction trigger)
        self.tail_bytes = 0
        self.compacted_bytes = 0  # encoded, at load or the last compaction (its threshold)
        self.connections: set[Connection] = set()
        self.awareness = AwarenessStates(awareness_limits)
        self._presence_out = AwarenessFanout(self.connections)  # batched per tick
        self.idle_since = asyncio.get_running_loop().time()
        self.closing = False
        self._update_log = update_log
        self._extensions = extensions
        self._on_update = implementing(extensions, "on_update")
        self._on_committed = implementing(extensions, "on_committed")
        self._on_tail_grown = on_tail_grown
        self._validator = ShadowValidator(doc, shadow)  # `shadow`: a copy of `doc`
        # Repairs (blackboard.sync.rules.repair); they see each transaction through
        # `_capture`, the Doc's one observer.
        self.rules = DocumentRules(doc, repair_policy, lattice, observe_doc=False)
        self.size = DocumentSize(max_document_bytes, lambda: len(doc.get_update()), size_estimate)
        self._captured: list[bytes] = []
        self._subscription: Subscription = doc.observe(self._capture)
        self.step2_cache = Step2Cache()  # emptied by any change
        self.fresh_join = FreshJoinReply(doc)  # kept across changes, for big documents
        self._deferred_timer: asyncio.TimerHandle | None = None  # peer updates' checks
        self._deferred_at = 0.0
        self._schedule_deferred_checks()  # those of entries loaded below their maximum

    def _capture(self, event: TransactionEvent) -> None:
        # Reading the Doc here raises; take the update bytes only.
        self._captured.append(event.update)
        self.rules.after_transaction(event)

    # --- connections ---------------------------------------------------------

    def join(self, connection: Connection) -> None:
        """Handshake (server step 1 + awareness snapshot), then receive broadcasts."""
        connection.send(sync_step1(self.doc.get_state()))
        self._send_awareness_snapshot(connection)
        self.connections.add(connection)
        for ext in self._extensions:
            ext.on_join(self, connection)

    def leave(self, connection: Connection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        removals = self.awareness.remove(connection.awareness_ids)
        if removals:
            payload = encode_awareness(removals)
            self._presence_out.queue(removals, None)
            for ext in self._extensions:
                ext.on_awareness(self, payload, Origin(Source.CLIENT, connection.actor, connection))
        if not self.connections:
            self.idle_since = asyncio.get_running_loop().time()
        for ext in self._extensions:
            ext.on_leave(self, connection)

    # --- incoming frames -----------------------------------------------------

    def receive(self, connection: Connection, frame: bytes) -> None:
        """Handle one frame from `connection`; a bad frame closes only that connection."""
        try:
            message = decode_message(frame)
        except ProtocolError as exc:
            connection.close(close_codes.MALFORMED, f"malformed message: {exc}")
            return
        origin = Origin(Source.CLIENT, connection.actor, connection)
        if isinstance(message, SyncMessage):
            if message.kind == SyncType.STEP1:
                self._answer_step1(message.payload, connection)
                return
            self._receive_update(connection, message.payload, origin)
        elif isinstance(message, AwarenessMessage):
            self._receive_awareness(connection, message.payload, origin)
        elif isinstance(message, QueryAwarenessMessage):
            self._send_awareness_snapshot(connection)
        # Auth messages from clients carry nothing for the server.

    def _send_awareness_snapshot(self, connection: Connection) -> None:
        for message in awareness_messages(self.awareness.snapshot()):
            connection.send(message)

    def _answer_step1(self, state_vector: bytes, connection: Connection) -> None:
        reply = self.step2_cache.get(state_vector)
        if reply is None and state_vector == EMPTY_STATE_VECTOR:
            frames = self.fresh_join.frames()
            if frames is not None:
                for frame in frames:
                    connection.send(frame)
                return
        if reply is None:
            try:
                with yrs_guard:
                    reply = sync_step2(self.doc.get_update(state_vector))
            except YrsError:
                connection.close(close_codes.MALFORMED, "malformed state vector")
                return
            self.step2_cache.put(state_vector, reply)
            if state_vector == EMPTY_STATE_VECTOR:
                self.fresh_join.reset(reply)
        connection.send(reply)

    def _receive_update(self, connection: Connection, update: bytes, origin: Origin) -> None:
        try:
            if connection.can_write:
                committed = self.apply_update(update, origin)
            elif self._validator.would_change(update):
                reason = "read-only token: writes are not allowed"
                connection.send(permission_denied(reason))
                connection.close(close_codes.FORBIDDEN, reason, drain=True)
                return
            else:  # e.g. a reader's sync step 2 that adds nothing: not a write
                committed = None
        except MalformedUpdate as exc:
            connection.close(close_codes.MALFORMED, str(exc)[:120])
            return
        except DocumentTooLarge as exc:
            connection.close(close_codes.DOCUMENT_TOO_LARGE, str(exc))
            return
        if connection.wants_acks:
            connection.acks.track(committed)

    def _receive_awareness(self, connection: Connection, payload: bytes, origin: Origin) -> None:
        try:
            fresh = self._fresh_awareness(connection, payload)
        except ProtocolError as exc:
            connection.close(close_codes.MALFORMED, f"malformed awareness: {exc}")
            return
        if fresh is None:
            cap = self.awareness.limits.ids_per_connection
            connection.close(close_codes.MALFORMED, f"more than {cap} awareness client ids")
            return
        accepted = self.awareness.apply(fresh)
        for entry in accepted:
            if entry.removed:
                connection.awareness_ids.discard(entry.client_id)
            else:
                connection.awareness_ids.add(entry.client_id)
        if accepted:
            relayed = encode_awareness(accepted)
            self._presence_out.queue(accepted, connection)
            for ext in self._extensions:
                ext.on_awareness(self, relayed, origin)

    def _fresh_awareness(
        self, connection: Connection, payload: bytes
    ) -> list[AwarenessEntry] | None:
        """The entries that would change something (stock clients echo every entry they
        receive, with the clock the room already has: those are skipped unchecked), or
        None as soon as they would leave `connection` holding more client ids than allowed,
        so a flood of new ids costs a few entries' decoding, not the whole message's."""
        owned = set(connection.awareness_ids)
        fresh = []
        for entry in read_awareness(payload):
            if not self.awareness.is_newer(entry):
                continue
            check_awareness_state(entry)
            (owned.discard if entry.removed else owned.add)(entry.client_id)
            if len(owned) > self.awareness.limits.ids_per_connection:
                return None
            fresh.append(entry)
        return fresh

    # --- the update pipeline -------------------------------------------------

    def apply_update(self, update: bytes, origin: Origin) -> asyncio.Future[int] | None:
        """Validate, apply, store and fan out one client update.

        Returns the future of its commit, or None if it changed nothing.
        Raises MalformedUpdate (nothing changed, nothing stored or sent), LogFull when
        the database is too far behind to take it, or DocumentTooLarge (both checked
        before applying).
        """
        self._update_log.check_room(len(update))
        self.size.check(len(update))
        self._validator.check(update)
        changes = self._apply_live(update, origin)
        if changes != [update] and self._held_past_a_gap(update):
            changes.append(update)
        corrections = self.rules.review(update, origin)
        committed = self._publish(changes, origin, repair_follows=bool(corrections))
        if corrections:
            self._write_repairs(corrections, origin, committed)
        return committed

    def _held_past_a_gap(self, update: bytes) -> bool:
        """Whether `update` has structs past a gap in their client's clocks. yrs keeps
        them (and may even show them) but no transaction update carries them, so the
        update itself must be stored, or a reload would not rebuild this document."""
        try:
            items = decode_update(update).items
        except ProtocolError:
            return True  # cannot tell: storing it again is harmless
        have = decode_state_vector(self.doc.get_state())
        return any(item.clock + item.length > have.get(item.client, 0) for item in items)

    def apply_peer_update(self, update: bytes, actor: str) -> bool:
        """An update another instance accepted from `actor` (SERVER_ACTOR: its own write)
        and stores: apply and fan out, do not store. Returns whether it changed the
        document (False: it was here already)."""
        self._validator.check(update)
        origin = Origin(Source.PEER, actor)
        changes = self._apply_live(update, origin)
        for change in changes:
            self.size.grew(len(change))
            self._broadcast(sync_update(change), exclude=None)
        self.rules.review(update, origin)  # checked later: its instance repairs it
        self._schedule_deferred_checks()
        return bool(changes)

    def _write_repairs(
        self,
        corrections: list[Correction],
        origin: Origin,
        committed: asyncio.Future[int] | None,
    ) -> None:
        """Fix, as the server, what an update broke (`blackboard.sync.rules.repair`)."""
        repaired = self.server_write(lambda doc: write_corrections(corrections, doc))
        for ext in self._extensions:
            ext.on_repair(self, corrections, committed or repaired, origin)

    def _schedule_deferred_checks(self) -> None:
        due = self.rules.next_deferred()
        if due is None or (self._deferred_timer is not None and self._deferred_at <= due):
            return
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
        self._deferred_at = due
        self._deferred_timer = asyncio.get_running_loop().call_at(due, self._run_deferred_checks)

    def _run_deferred_checks(self) -> None:
        self._deferred_timer = None
        if self.closing:
            return
        corrections = self.rules.check_deferred()
        if corrections:
            self._write_repairs(corrections, Origin(Source.PEER, SERVER_ACTOR), None)
        self._schedule_deferred_checks()

    def server_write(
        self, write: Callable[[Doc], None], actor: str = SERVER_ACTOR
    ) -> asyncio.Future[int] | None:
        """Change the document as the server (repairs, mirrors); stored and sent to all."""
        origin = Origin(Source.SERVER, actor)
        with self.doc.transaction(origin=origin):
            write(self.doc)
        changes = self._take_captured()
        for change in changes:
            self._validator.track(change)
        return self._publish(changes, origin)

    def _apply_live(self, update: bytes, origin: Origin) -> list[bytes]:
        try:
            with yrs_guard:
                apply_update(self.doc, update, origin)
        except YrsError as exc:
            # The shadow accepted it, so this should not happen; the live doc may now
            # be partial, so drop the room and let clients reload it from storage.
            log.error(
                "room %s: live apply failed after validation: %s: %s",
                self.project_id,
                exc.kind,
                exc,
                extra={"project_id": self.project_id},
            )
            self.fail(close_codes.INTERNAL_ERROR, "internal error")
            raise MalformedUpdate("update failed on the live document") from None
        return self._take_captured()

    def _take_captured(self) -> list[bytes]:
        changes, self._captured = self._captured, []
        if changes:
            self.step2_cache.clear()
            self.fresh_join.changed()
        return changes

    def _publish(
        self, changes: list[bytes], origin: Origin, *, repair_follows: bool = False
    ) -> asyncio.Future[int] | None:
        """Store and send `changes`; their status epochs go with the first. A repair that
        follows must commit with them: stored without it, a broken update would stay."""
        committed: asyncio.Future[int] | None = None
        record = self.rules.take_record()
        # A socket that asked for no acks waits for no commit (requests and the server's
        # own writes do).
        sender = origin.connection
        awaited = sender is None or sender.wants_acks
        for n, change in enumerate(changes):
            self.size.grew(len(change))
            committed = self._update_log.append(
                self.project_id,
                change,
                origin.actor,
                record if n == 0 else b"",
                commit_with_next=repair_follows and n == len(changes) - 1,
                on_commit=self._committed,
                awaited=awaited,
            )
            self._broadcast(sync_update(change), exclude=sender)
            for on_update in self._on_update:
                on_update(self, change, origin)
        return committed

    def _committed(self, seq: int, size: int) -> None:
        self.seq = max(self.seq, seq)
        self.tail_rows += 1
        self.tail_bytes += size
        for on_committed in self._on_committed:
            on_committed(self, seq, size)
        self._on_tail_grown(self)

    def _broadcast(self, message: bytes, exclude: Connection | None) -> None:
        for connection in self.connections:
            if connection is not exclude:
                connection.send(message)

    def relay_awareness(self, payload: bytes) -> None:
        """Awareness from another instance: remember it and send it to local clients."""
        try:
            accepted = self.awareness.apply(decode_awareness(payload))
        except ProtocolError:
            return
        if accepted:
            self._presence_out.queue(accepted, None)

    # --- lifecycle -----------------------------------------------------------

    def fail(self, code: int, reason: str) -> None:
        """Close every connection (e.g. the live doc can no longer be trusted)."""
        self.closing = True
        for connection in list(self.connections):
            connection.close(code, reason)
        self.connections.clear()

    def dispose(self) -> None:
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
        self._presence_out.close()
        self._subscription and self.doc.unobserve(self._subscription)
        self.rules.close()
        for ext in self._extensions:
            ext.on_unloaded(self)
