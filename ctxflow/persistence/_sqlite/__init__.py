"""The SQLite store, split along its concerns: schema, body segments, checkpoint packs, heads.

:mod:`.store` holds :class:`SQLiteStore`, which composes the parts; each part's
module docstring explains its storage scheme.
"""

from ctxflow.persistence._sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
