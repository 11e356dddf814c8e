"""The PostgreSQL store: durable checkpoints shared by many processes and machines.

Layout. One PostgreSQL schema (``ctxflow`` unless told) holds the tables,
created and upgraded by the store on open (:mod:`.schema`, with the version
table ``ctxflow_schema``)::

    sessions        (id, tenant, name, latest, latest_seq)   one row per session
    checkpoints     (tenant, id, session, parent, seq, full, record fields, manifest)
    bodies          (tenant, hash, data)                     content-addressed, per tenant
    session_bodies  (tenant, session, hash)                  which session references which body
    fences          (tenant, name, owner, token)             the newest lease a session has seen

Bodies are content-addressed across a tenant's sessions, as in the SQLite
store: a fork writes no body, and a body is deleted only when no session of
the tenant references it. Manifests are format v3 records (a delta against
the parent, a full one every so often, as the checkpointer decides); loading a
checkpoint reads only the rows from the last full manifest at or before it.
PostgreSQL compresses large values itself (TOAST) and keeps rows small, so the
SQLite store's body segments and checkpoint packs, which work around
per-row overhead in one file, have no counterpart here.

Locks and atomicity. Every operation is one transaction. A write first takes
an advisory transaction lock on its session (so two writers of one session
queue; the stale-parent check and the insert happen under it), then reads
committed data. Reads run in ``REPEATABLE READ, READ ONLY`` transactions: one
snapshot, so a load never mixes two checkpoints. Deleting bodies (retention,
erasure) takes the tenant's body lock exclusively while puts share it, so a
body a put reuses is never deleted before the put's reference commits. A
serialization failure or deadlock runs the operation again (PostgreSQL rolled
it back); a lost connection runs a read again, never a write (it may have
landed).

Fencing. ``put``, ``prune``, ``erase`` and ``fork`` take a ``fence`` (any
value with ``owner`` and ``token``, such as a lease's
:class:`~ctxflow.stores.Fence`). The store keeps the newest fence each
session has seen in ``fences``: a fenced operation checks it first, inside its
transaction and under the session's lock, and is refused with
:class:`~ctxflow.errors.OwnershipLost` when a newer token (or the same token
of another owner) is recorded; a write with a newer token records it.
Tokens only grow, so once a new owner has written (or called
:meth:`PostgresStore.claim`) no write of an older lease lands. Erasure keeps
the session's fence, so a token never goes back.

Failures. Every psycopg error is re-raised as :class:`~ctxflow.errors.StoreError`
naming the operation, tenant and schema; a pool that cannot give a connection
in time is ``rule="postgres_pool"``. Ids holding NUL (which PostgreSQL text
cannot store) are refused with ``CheckpointError`` before any statement.

Modules: :mod:`.schema` (tables, versions, name checks), :mod:`.store`
(:class:`PostgresStore`, the pool helper).
"""

from ctxflow.persistence._postgres.store import FenceLike, PostgresStore, open_pool

__all__ = ["FenceLike", "PostgresStore", "open_pool"]
