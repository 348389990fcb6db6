"""The load generator: raw y-websocket clients in their own process (`python -m bench.loadgen`).

It speaks the wire protocol directly (no Yjs client logic on the hot path), sends prebuilt
valid Yjs updates that carry their send time, and measures delivery latency where they
arrive. The runner (`python -m bench`) starts it and drives it phase by phase.
"""
