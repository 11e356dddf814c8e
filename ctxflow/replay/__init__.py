"""Replaying recorded agent conversations through the engine (``ctxflow run``)."""
