"""Sessions: many agent contexts in one process (and, with Redis, across processes)."""
