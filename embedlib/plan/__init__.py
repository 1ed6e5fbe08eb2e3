"""From windows of pending rows to batches: what to skip, reuse, defer and encode (``planner``),
and the pure functions that fold, sort and cut (``batching``)."""
