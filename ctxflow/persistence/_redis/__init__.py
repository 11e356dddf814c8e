"""The Redis store: checkpoints of many processes and machines in one Redis server or cluster.

Layout. Every key starts with ``ctxflow:{tenant}:``, so tenants (apps) never
see each other's keys. All keys of one session share the hash tag
``{session_id}``, so every script and transaction below touches one cluster
slot and runs unchanged on Redis Cluster::

    ctxflow:<tenant>:sessions                sorted set: session ids by first write
    ctxflow:<tenant>:s:{<sid>}:order         list: checkpoint ids, oldest first
    ctxflow:<tenant>:s:{<sid>}:rec           hash: checkpoint id -> record (msgpack)
    ctxflow:<tenant>:s:{<sid>}:man           hash: checkpoint id -> manifest (codec bytes)
    ctxflow:<tenant>:s:{<sid>}:body          hash: body hash -> body (codec bytes)
    ctxflow:<tenant>:s:{<sid>}:owner         the lease a fenced write checks (see below)
    ctxflow:<tenant>:s:{<sid>}:fence         the session's last fencing token

Trade-off: bodies are content-addressed *within a session*, not across the
store as in the memory and SQLite stores. A body shared by two sessions (a
fork) is stored twice, and a fork copies its bodies; in return a checkpoint
write, retention and erasure never leave the session's slot, and they delete
only what the session holds.

Atomicity. A put is a Lua script that checks the stale parent and writes the
record, manifest and new bodies; Redis runs a script with nothing
interleaved. Reads, retention and erasure run the shared
:class:`~ctxflow.persistence.BaseStore` code inside an optimistic
transaction: the session's keys are WATCHed before they are read, writes are
queued and sent in one MULTI/EXEC, and if another client changed the session
meanwhile the operation runs again from the start.

Fencing. ``put``, ``prune``, ``erase`` and ``fork`` take a :class:`Fence`
(the owner value and token of a lease, see ``ctxflow.sessions``). A fenced
operation checks the session's ``owner`` and ``fence`` keys *before* anything
else and holds that check until its write lands (in the put's script; by
WATCHing both keys in a transaction), so a writer that lost its lease gets
``OwnershipLost`` and changes nothing. A fork's fence is checked when the
source checkpoint is read: the copy is of a checkpoint the lease holder could
see, and the new session is no other owner's.

The session index is a key outside the session's slot, so it is updated
outside the session's transaction: added before the first write, removed
after erasure. A crash in between leaves an index entry of an empty session,
which :meth:`RedisStore.sessions` skips.

Failures. Every redis-py error is re-raised as :class:`~ctxflow.errors.StoreError`
naming the operation. Reads are retried on connection errors and timeouts
(``read_retries`` times); writes are not, because a write whose reply was
lost may have been applied. :meth:`RedisStore.from_url` turns redis-py's own
retries off for that reason (pass ``retry=`` to override). TTLs: ``ttl``
expires a session's checkpoints that long after its last write;
:meth:`RedisStore.expire` sets one session's expiry.

Modules: :mod:`.keys` (names, checks, the fence), :mod:`.records` (the stored
record), :mod:`.scripts` (Lua), :mod:`.primitives` (the transaction and what
``BaseStore`` builds on), :mod:`.store` (:class:`RedisStore`).
"""

from ctxflow.persistence._redis.keys import Fence, RedisKeys, check_session_id, check_tenant
from ctxflow.persistence._redis.store import RedisStore

__all__ = ["Fence", "RedisKeys", "RedisStore", "check_session_id", "check_tenant"]
