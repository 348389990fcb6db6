"""The one group committer: batches take what queued meanwhile, a failed batch is retried
in order, drops and discards never touch what they should not, `flush` waits for what
was queued before it, and `stop` hands back (and never leaks) what it could not commit."""

from __future__ import annotations

import asyncio

import pytest

from blackboard.persistence.group_commit import GroupCommitter
from tests.support.api import eventually, holds


class Sink:
    """A commit that stores its batches and fails the next `failures` commits (the
    database being down, which a unit test of the queue cannot cause otherwise)."""

    def __init__(self, failures: int = 0, held: frozenset[int] | None = None) -> None:
        self.failures = failures
        self.held = held  # the items whose batch waits for `gate` (None: every one)
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, batch: list[int]) -> None:
        if self.held is None or self.held & set(batch):
            await asyncio.wait_for(self.gate.wait(), 10)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("down")
        self.batches.append(list(batch))


async def test_batches_keep_order_through_retries_and_respect_with_next() -> None:
    sink = Sink(failures=2)
    committer = GroupCommitter(
        "t", sink.commit, max_batch=2, retry_max_s=0.01, with_next=lambda n: n == 2
    )
    for n in range(1, 6):
        committer.put(n)
    committer.start()
    await asyncio.wait_for(committer.flush(), 10)
    assert sink.batches == [[1, 2, 3], [4, 5]]  # 2 stays with 3 past max_batch
    assert len(committer) == 0
    assert await committer.stop(5) == []


async def test_drop_and_discard_spare_what_they_should() -> None:
    sink = Sink(failures=1)
    sink.gate.clear()  # the first batch stays in flight, then fails
    committer = GroupCommitter("t", sink.commit, max_batch=2, retry_max_s=0.01)
    for n in range(1, 7):
        committer.put(n)
    committer.start()
    await eventually(holds(lambda: committer.waiting == 4))
    assert committer.drop_oldest(1) == [3]  # the oldest waiting, not one in flight
    assert committer.discard(lambda n: n % 2 == 0) == [2, 4, 6]  # in flight too
    assert list(committer.items()) == [1, 5] and len(committer) == 2
    sink.gate.set()
    await asyncio.wait_for(committer.flush(), 10)
    assert sink.batches == [[1, 5]]  # the failed batch came back without 2
    await committer.stop(5)


async def test_flush_waits_only_for_what_was_queued_before_it() -> None:
    sink = Sink(held=frozenset({2}))
    sink.gate.clear()
    committer = GroupCommitter("t", sink.commit, max_batch=1)
    committer.put(1)
    committer.start()
    flushed = asyncio.create_task(committer.flush())
    await asyncio.sleep(0)  # the flush begins
    committer.put(2)  # queued after the flush began, and held back
    await asyncio.wait_for(flushed, 10)
    assert sink.batches == [[1]] and list(committer.items()) == [2]
    sink.gate.set()
    await committer.stop(5)
    assert sink.batches == [[1], [2]]


async def test_stop_past_its_grace_cancels_the_writer_and_returns_the_rest() -> None:
    sink = Sink(failures=1_000_000)  # the database never comes back
    committer = GroupCommitter("t", sink.commit, max_batch=2, retry_max_s=0.01)
    for n in range(1, 4):
        committer.put(n)
    committer.start()
    await eventually(holds(lambda: sink.failures < 1_000_000))
    assert await committer.stop(0.2) == [1, 2, 3]
    assert committer.stopping
    writers = [t for t in asyncio.all_tasks() if t.get_name() == "t"]
    assert writers == [], "the cancelled writer is still running"


async def test_min_interval_gathers_a_steady_stream_and_spares_a_lone_item() -> None:
    sink = Sink()
    committer = GroupCommitter("t", sink.commit, max_batch=100, min_interval_s=0.2)
    committer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(20):  # one item per millisecond, for 20 ms
        committer.put(n)
        await asyncio.sleep(0.001)
    await asyncio.wait_for(committer.flush(), 10)
    # The first commits at once; the rest wait for the interval and share a batch.
    assert sink.batches[0] == [0] and len(sink.batches) <= 3
    assert [n for batch in sink.batches for n in batch] == list(range(20))
    assert loop.time() - started >= 0.2
    await asyncio.sleep(0.25)  # a quiet spell longer than the interval
    lone_at = loop.time()
    committer.put(99)
    await asyncio.wait_for(committer.flush(), 10)
    assert loop.time() - lone_at < 0.15  # committed at once, not after the interval
    assert await committer.stop(5) == []


async def test_a_busy_queue_does_not_wait_for_the_interval() -> None:
    sink = Sink()
    committer = GroupCommitter("t", sink.commit, max_batch=100, min_interval_s=30.0, busy_batch=10)
    committer.start()
    committer.put(0)
    await asyncio.wait_for(committer.flush(), 10)  # the first batch: at once
    for n in range(1, 11):  # ten items waiting: the next batch goes without the 30 s
        committer.put(n)
    await asyncio.wait_for(committer.flush(), 10)
    assert sink.batches == [[0], list(range(1, 11))]
    assert await committer.stop(5) == []


async def _paced(
    sink: Sink, *, min_interval_s: float, unawaited_interval_s: float, busy_batch: int = 0
) -> GroupCommitter[int]:
    """A started committer that counts items from 100 up as awaited, past its first batch
    (item 0, committed at once after the quiet start), so that the next one is paced."""
    committer = GroupCommitter(
        "t",
        sink.commit,
        max_batch=100,
        min_interval_s=min_interval_s,
        busy_batch=busy_batch,
        awaited=lambda n: n >= 100,
        unawaited_interval_s=unawaited_interval_s,
    )
    committer.start()
    committer.put(0)
    await eventually(holds(lambda: sink.batches == [[0]]))
    return committer


async def test_unawaited_items_wait_longer_until_an_awaited_one_queues() -> None:
    sink = Sink()
    committer = await _paced(sink, min_interval_s=0.05, unawaited_interval_s=30.0)
    for n in range(1, 11):  # unawaited: they would wait out the 30 s
        committer.put(n)
    await asyncio.sleep(0.2)
    assert sink.batches == [[0]]
    loop = asyncio.get_running_loop()
    queued_at = loop.time()
    committer.put(100)  # someone waits for this one: the 50 ms interval applies
    await eventually(holds(lambda: len(sink.batches) == 2))
    assert sink.batches[1] == [*range(1, 11), 100]
    assert loop.time() - queued_at < 5
    assert await committer.stop(5) == []


async def test_busy_counts_only_awaited_items() -> None:
    sink = Sink()
    committer = await _paced(sink, min_interval_s=30.0, unawaited_interval_s=60.0, busy_batch=2)
    committer.put(1)
    committer.put(2)  # two waiting, but neither awaited: not busy
    await asyncio.sleep(0.1)
    assert sink.batches == [[0]]
    committer.put(100)
    committer.put(101)  # two awaited: busy, so no interval at all
    await eventually(holds(lambda: len(sink.batches) == 2))
    assert sink.batches[1] == [1, 2, 100, 101]
    assert await committer.stop(5) == []


async def test_flush_hurries_unawaited_items() -> None:
    sink = Sink()
    committer = await _paced(sink, min_interval_s=0.05, unawaited_interval_s=60.0)
    committer.put(1)
    committer.put(2)
    await asyncio.sleep(0.2)
    assert sink.batches == [[0]]  # unawaited: they would wait the 60 s...
    loop = asyncio.get_running_loop()
    flushed_at = loop.time()
    await asyncio.wait_for(committer.flush(), 10)  # ... but now someone waits for them
    assert sink.batches == [[0], [1, 2]]
    assert loop.time() - flushed_at < 5
    assert await committer.stop(5) == []


async def test_a_failed_batch_stays_awaited_through_its_retry() -> None:
    sink = Sink()
    committer = await _paced(sink, min_interval_s=0.05, unawaited_interval_s=60.0)
    sink.failures = 1
    committer.put(1)
    committer.put(100)  # awaited: the batch goes at the short interval, and fails
    # Back in the queue, 100 is still awaited: the retry does not wait out the 60 s.
    await eventually(holds(lambda: len(sink.batches) == 2), timeout=5)
    assert sink.batches[1] == [1, 100] and sink.failures == 0
    assert await committer.stop(5) == []


@pytest.mark.parametrize("removal", ["drop_oldest", "discard"])
async def test_an_awaited_item_removed_no_longer_hurries_the_rest(removal: str) -> None:
    sink = Sink()
    committer = await _paced(sink, min_interval_s=0.05, unawaited_interval_s=60.0)
    committer.put(100)
    committer.put(1)
    if removal == "drop_oldest":
        assert committer.drop_oldest(1) == [100]
    else:
        assert committer.discard(lambda n: n == 100) == [100]
    await asyncio.sleep(0.3)
    assert sink.batches == [[0]]  # 1 waits out the 60 s: nobody waits for it
    await asyncio.wait_for(committer.flush(), 10)
    assert sink.batches == [[0], [1]]
    assert await committer.stop(5) == []
