"""Scale-out through Redis: the relay between instances, gap detection and catch-up from
the log, heartbeats and adoption, presence across instances, and their metrics."""
