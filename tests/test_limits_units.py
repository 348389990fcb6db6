"""The pure parts of the limits: the rate limiter, the document size budget, the
read-only write check on the shadow document, and new connections per address."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Map

from blackboard.sync.room.doc_size import DocumentSize, DocumentTooLarge
from blackboard.sync.room.rate_limit import MessageRateLimit, TokenBucket
from blackboard.sync.rules.validation import MalformedUpdate, ShadowValidator
from blackboard.sync.wire.yjs_encoding import decode_state_vector, structless_delete_ranges
from blackboard.web.settings import Settings
from blackboard.web.transport import AddressRate
from tests.support.regressions import REGRESSIONS, base_doc

# --- rate limit ---------------------------------------------------------------


def test_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.1)  # in debt by one token
    assert bucket.take(0.1) == pytest.approx(0.1)  # paid back, then one more
    assert bucket.take(10.0) == 0.0  # refilled (capped at capacity)


def test_rate_limit_throttles_then_gives_up_on_a_persistent_sender() -> None:
    limit = MessageRateLimit(rate=100, window_s=1.0, now=0.0)
    now = 0.0
    for _ in range(100):  # the burst allowance: rate x window
        assert limit.admit(now) == 0.0
    waits = []
    while (wait := limit.admit(now)) is not None:  # the sender never stops
        waits.append(wait)
        now += wait / 10  # sends 10x faster than it is paced
    assert waits and all(w > 0 for w in waits)
    assert 1.0 < now < 1.2  # closed once throttled for longer than the window


def test_rate_limit_forgives_a_sender_that_slows_down() -> None:
    limit = MessageRateLimit(rate=100, window_s=1.0, now=0.0)
    now = 0.0
    for _ in range(150):
        wait = limit.admit(now)
        assert wait is not None
        now += wait
    assert limit.throttled
    now += 1.0  # pauses: the bucket refills
    assert limit.admit(now) == 0.0
    assert not limit.throttled
    for _ in range(1000):  # then keeps to the rate for a long time
        now += 0.01
        assert limit.admit(now) == 0.0


def test_reader_stalls_do_not_forgive_a_flood() -> None:
    """The reading side stalls now and then (a busy loop refills a few tokens), while
    the sender keeps its socket full: still closed after about one window."""
    limit = MessageRateLimit(rate=100, window_s=1.0, now=0.0)
    now, handled = 0.0, 0
    while (wait := limit.admit(now)) is not None and now < 10:
        handled += 1
        now += wait + (0.05 if handled % 20 == 0 else 0.0)
    assert 1.0 < now < 1.5
    assert handled < 100 + 100 * 1.5


# --- document size ------------------------------------------------------------


def test_document_size_measures_only_near_the_limit() -> None:
    sizes = iter([500, 800])  # what successive full encodes find
    measured: list[int] = []

    def measure() -> int:
        measured.append(next(sizes))
        return measured[-1]

    size = DocumentSize(limit=1000, measure=measure, estimate=900)
    size.check(50)  # the estimate (900 + 50) fits: no encode
    assert measured == []
    size.check(200)  # the estimate says no, so measure: 500 + 200 fits
    assert measured == [500]
    size.grew(200)
    size.check(250)  # 700 + 250 fits without measuring
    with pytest.raises(DocumentTooLarge):
        size.check(400)  # grew past the re-measure step: measured 800, + 400 is over
    assert measured == [500, 800]
    with pytest.raises(DocumentTooLarge):
        size.check(400)  # nothing grew since: refused without another encode
    assert measured == [500, 800]


# --- shadow check ---------------------------------------------------------------


def test_only_an_update_that_decoded_costs_a_shadow_rebuild(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = base_doc()
    validator = ShadowValidator(live)
    copies: list[Doc] = []
    copy = ShadowValidator._copy
    monkeypatch.setattr(
        ShadowValidator, "_copy", staticmethod(lambda doc: copies.append(doc) or copy(doc))
    )
    with pytest.raises(MalformedUpdate):
        validator.check(b"\x01\xff\xff\xff not an update")
    assert copies == []  # yrs refused it before applying any of it
    partial = REGRESSIONS["partial-apply-block-parent-not-a-type"]
    with pytest.raises(MalformedUpdate):
        validator.check(partial)
    assert copies == [live]  # it changed the shadow part-way: a fresh copy of the live doc
    assert validator._shadow.get_state() == live.get_state()


# --- read-only write check ----------------------------------------------------


def _docs() -> tuple[Doc, Doc, ShadowValidator]:
    live = Doc()
    live.get("shots", type=Map)["S1"] = Map({"title": "Opening"})
    reader = Doc()
    reader.apply_update(live.get_update())
    return live, reader, ShadowValidator(live)


def _edit(doc: Doc, change: object) -> bytes:
    before = doc.get_state()
    change(doc)  # type: ignore[operator]
    return doc.get_update(before)


def test_new_content_is_a_write_and_the_live_doc_is_untouched() -> None:
    live, reader, validator = _docs()
    before = live.get_update()
    update = _edit(reader, lambda d: d.get("shots", type=Map).__setitem__("S2", Map({"t": 1})))
    assert validator.would_change(update)
    assert live.get_update() == before


def test_deleting_a_known_entry_is_a_write_and_the_shadow_is_restored() -> None:
    live, reader, validator = _docs()
    update = _edit(reader, lambda d: d.get("shots", type=Map).pop("S1"))
    assert validator.would_change(update)
    assert "S1" in live.get("shots", type=Map)
    # The shadow still mirrors the live doc: the same delete is still a change.
    assert validator.would_change(update)


def test_what_adds_nothing_is_not_a_write() -> None:
    live, reader, validator = _docs()
    shots = live.get("shots", type=Map)
    update = _edit(live, lambda d: d.get("shots", type=Map).pop("S1"))
    validator.track(update)
    reader.apply_update(update)
    # A reader's sync step 2 after it synced a deletion: only known deletes.
    step2 = reader.get_update(live.get_state())
    assert structless_delete_ranges(step2)
    assert not validator.would_change(step2)
    # An echo of an update the document has.
    assert not validator.would_change(update)
    assert not validator.would_change(b"\x00\x00")
    assert "S1" not in shots


def test_deleting_what_the_document_does_not_have_yet_is_a_write() -> None:
    _, reader, validator = _docs()
    shots = reader.get("shots", type=Map)
    shots["S9"] = 1
    state = reader.get_state()
    del shots["S9"]
    delete_only = reader.get_update(state)  # deletes an item the server never saw
    assert structless_delete_ranges(delete_only)
    assert validator.would_change(delete_only)


def test_garbage_is_malformed() -> None:
    _, _, validator = _docs()
    with pytest.raises(MalformedUpdate):
        validator.would_change(b"\xff\xff\xff")


def test_state_vector_decoding() -> None:
    doc = Doc(client_id=300)
    doc.get("shots", type=Map)["a"] = 1
    assert decode_state_vector(doc.get_state()) == {300: 1}


# --- new connections per address -------------------------------------------------


def test_connection_rate_allows_a_burst_then_the_rate_and_refusals_take_nothing() -> None:
    rate = AddressRate(rate=2, burst=3)
    assert [rate.admit("10.0.0.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rate.admit("10.0.0.2", 0.0)  # another address has its own bucket
    assert not any(rate.admit("10.0.0.1", 0.1) for _ in range(100))  # no debt built up
    assert rate.admit("10.0.0.1", 0.5)  # one token back after 1 / rate
    assert not rate.admit("10.0.0.1", 0.5)
    assert rate.admit(None, 0.5)  # not an IP socket (a Unix socket): not limited
    assert all(AddressRate(rate=0, burst=3).admit("10.0.0.1", 0.0) for _ in range(100))
    with pytest.raises(ValueError):
        AddressRate(rate=1, burst=0)


def test_connection_rate_forgets_idle_addresses_and_stays_bounded() -> None:
    rate = AddressRate(rate=10, burst=5, max_addresses=100)
    for n in range(50):
        assert all(rate.admit(f"10.0.0.{n}", 0.0) for _ in range(5))  # its whole burst
    assert len(rate) == 50
    assert rate.admit("10.0.1.1", 0.45)  # the others are not full again yet: kept
    assert len(rate) == 51
    assert rate.admit("10.0.1.2", 0.5)  # burst / rate later they are: forgotten
    assert len(rate) == 2  # (10.0.1.1 has 4.5 tokens: kept)
    for n in range(1000):  # many addresses at once: the least recently seen go first
        assert all(rate.admit(f"10.1.{n // 256}.{n % 256}", 1.0) for _ in range(5))
    assert len(rate) == 100


def test_a_connection_rate_without_a_burst_is_one_line_at_start() -> None:
    env = {"BLACKBOARD_CONNECTION_BURST_PER_ADDRESS": "0"}
    with pytest.raises(SystemExit, match="BURST_PER_ADDRESS must be at least 1"):
        Settings.from_env(env)
    off = Settings.from_env({**env, "BLACKBOARD_CONNECTION_RATE_PER_ADDRESS": "0"})
    assert off.limits.connection_burst_per_address == 0
