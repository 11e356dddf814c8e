"""ctxflow's benchmark harness (run with ``make bench``; not shipped in the wheel)."""
