"""The live document: a room applies and fans out updates to its connections, acks what
is durable, relays awareness, and enforces size and rate limits; extensions hook in."""
