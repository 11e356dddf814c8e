"""Layered memory: consolidation, bounds, retrieval, the memory tool and memory shared across sessions."""
