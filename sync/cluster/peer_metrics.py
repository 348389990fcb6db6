"""The scale-out metrics: a Prometheus collector, read when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from blackboard.sync.cluster.adoption import Adoption
from blackboard.sync.cluster.catch_up import CatchUp
from blackboard.sync.cluster.peer_relay import PeerRelay
from blackboard.sync.cluster.redis_bus import RedisBus


class PeerMetrics:
    def __init__(
        self, bus: RedisBus, relay: PeerRelay, catch_up: CatchUp, adoption: Adoption
    ) -> None:
        self.bus = bus
        self.relay = relay
        self.catch_up = catch_up
        self.adoption = adoption

    def collect(self) -> Iterator[Metric]:
        bus = self.bus
        yield GaugeMetricFamily(
            "blackboard_redis_up", "1 if the Redis bus is up", value=bus.healthy
        )
        for name, help_text, value in (
            ("published", "Peer messages sent to Redis", bus.published),
            ("dropped", "Peer messages not sent (Redis down or queue full)", bus.dropped),
            ("received", "Peer messages received from Redis", bus.received),
        ):
            yield CounterMetricFamily(f"blackboard_peer_messages_{name}", help_text, value=value)
        yield CounterMetricFamily(
            "blackboard_peer_updates_caught_up",
            "Log rows applied that Redis had not delivered",
            value=self.catch_up.caught_up,
        )
        yield CounterMetricFamily(
            "blackboard_peer_updates_adopted",
            "Updates stored on behalf of an instance that died before storing them",
            value=self.adoption.adopted,
        )
        yield from self.relay.lag.collect()
