"""The document rules read the document only where an update touched something a rule
covers: an update of extra fields, or of a root the schema does not know, runs no rule
check at all (issue 16: the rules were a third of the server's CPU per update)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pycrdt import Doc, Map

from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.rules.document_reader import DocumentReader
from blackboard.sync.rules.lattice import LatticeTracker, Target
from blackboard.sync.rules.repair import DocumentRules

CLIENT = Origin(Source.CLIENT, "agent")


class Live:
    """A live Doc with its rules, and an agent's Doc whose edits reach it as a room
    hands them over (applied as the client's, then reviewed)."""

    def __init__(self) -> None:
        self.doc = Doc(client_id=1)
        tasks = self.doc.get("tasks", type=Map)
        with self.doc.transaction():
            tasks["T1"] = Map({"kind": "render", "status": "pending", "attempt": 1})
            tasks["T1"]["extra"] = Map({"note": "kept as is"})
        self.rules = DocumentRules(self.doc)
        self.agent = Doc(client_id=2)
        self.agent.apply_update(self.doc.get_update())

    def review(self, edit: Callable[[Doc], None]) -> int:
        """How many checks read the live document for the update `edit` makes."""
        updates: list[bytes] = []
        subscription = self.agent.observe(lambda event: updates.append(event.update))
        edit(self.agent)
        self.agent.unobserve(subscription)
        checks = 0
        for update in updates:
            with self.doc.transaction(origin=CLIENT):
                self.doc.apply_update(update)
            before = _Reads.count
            self.rules.review(update, CLIENT)
            checks += _Reads.count - before
        return checks


class _Reads:
    count = 0  # checks that read the live document (entered `DocumentReader.reading`)


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    reading = DocumentReader.reading

    def counted(self: DocumentReader) -> object:
        _Reads.count += 1
        return reading(self)

    monkeypatch.setattr(DocumentReader, "reading", counted)
    live = Live()
    yield live
    live.rules.close()


def _task(doc: Doc) -> Map:
    return doc.get("tasks", type=Map)["T1"]


NO_RULE: dict[str, Callable[[Doc], None]] = {
    "an extra field of an entry": lambda doc: _task(doc).__setitem__("colour", "red"),
    "inside an extra field": lambda doc: _task(doc)["extra"].__setitem__("note", "new"),
    "a root without rules": lambda doc: doc.get("scratch", type=Map).__setitem__("x", "y"),
}

RULED: dict[str, Callable[[Doc], None]] = {
    "a field with a kind": lambda doc: _task(doc).__setitem__("kind", "upscale"),
    "a lattice field": lambda doc: _task(doc).__setitem__("status", "claimed"),
    "a server field": lambda doc: _task(doc).__setitem__("lease_holder", None),
}


@pytest.mark.parametrize("edit", NO_RULE.values(), ids=NO_RULE.keys())
def test_an_update_no_rule_covers_runs_no_check(live: Live, edit: Callable[[Doc], None]) -> None:
    assert live.review(edit) == 0


@pytest.mark.parametrize("edit", RULED.values(), ids=RULED.keys())
def test_an_update_a_rule_covers_is_checked(live: Live, edit: Callable[[Doc], None]) -> None:
    assert live.review(edit) > 0


def test_a_status_that_lost_sent_with_a_plain_write_still_counts() -> None:
    """The structs of an update showing only plain writes (a title) are skipped only
    when they are those writes: a status write that lost a race shows in no event,
    yet its value counts for the maximum."""
    live = Live()
    winner = Doc(client_id=9)  # a higher client id wins a concurrent map write
    winner.apply_update(live.doc.get_update())
    _task(winner)["status"] = "claimed"
    with live.doc.transaction(origin=CLIENT):
        live.doc.apply_update(winner.get_update(live.doc.get_state()))
    live.rules.review(winner.get_update(), CLIENT)

    updates: list[bytes] = []
    subscription = live.agent.observe(lambda event: updates.append(event.update))
    with live.agent.transaction():
        _task(live.agent)["status"] = "done"  # concurrent with "claimed": it loses
        _task(live.agent)["kind"] = "upscale"
    live.agent.unobserve(subscription)
    (update,) = updates
    with live.doc.transaction(origin=CLIENT):
        live.doc.apply_update(update)
    corrections = live.rules.review(update, CLIENT)
    assert [(c.path, c.after) for c in corrections] == [(("tasks", "T1", "status"), "done")]
    assert live.rules.lattice.target("tasks", "T1") is not None
    live.rules.close()


def test_a_plain_write_reads_no_structs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write of one field no lattice decides (a task's kind) is not read struct by
    struct for the lattices; a status write is."""
    live = Live()
    indexed: list[bytes] = []
    index = LatticeTracker.index
    monkeypatch.setattr(
        LatticeTracker, "index", lambda self, update: indexed.append(update) or index(self, update)
    )
    live.review(lambda doc: _task(doc).__setitem__("kind", "upscale"))
    assert indexed == []
    live.review(lambda doc: _task(doc).__setitem__("status", "claimed"))
    assert len(indexed) == 1
    live.rules.close()


def test_a_status_that_lost_below_the_maximum_runs_no_check(live: Live) -> None:
    """A stale replica's status write that lost its race and is below the maximum
    changes nothing the entry shows or must show: no check reads the document."""
    winner = Doc(client_id=9)  # a higher client id wins a concurrent map write
    winner.apply_update(live.doc.get_update())
    _task(winner)["status"] = "running"
    with live.doc.transaction(origin=CLIENT):
        live.doc.apply_update(winner.get_update(live.doc.get_state()))
    assert live.rules.review(winner.get_update(), CLIENT) == []
    assert live.review(lambda doc: _task(doc).__setitem__("status", "claimed")) == 0
    assert live.rules.lattice.target("tasks", "T1") == Target("running", 1.0, owned=True)
    assert live.review(lambda doc: _task(doc).__setitem__("status", "done")) > 0
