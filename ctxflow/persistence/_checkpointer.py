"""Capture a conversation, its layered state and chart into a store; restore them exactly.

A :class:`Checkpointer` is bound to one store and one session. It remembers
the manifest it wrote last, so the next capture costs what changed since:
the appended messages (hashed and stored once), the changed tags and
overlays, and the state or chart only if they changed.

It writes a full manifest at most every ``full_every`` checkpoints, and only
once the deltas written since the last full manifest weigh at least
``full_ratio`` times that manifest (in msgpack bytes). A full manifest lists
every message, so writing one at a fixed interval would make storage grow
quadratically over a long session; tying it to the delta bytes keeps the
manifests' total linear (about ``1 + 2 / full_ratio`` times the final full
manifest), while a load replays at most about as many deltas as the log has
messages. ``full_ratio=0`` gives a plain "every ``full_every``" rule.

The layered state and the chart configuration are opaque plain mappings here
(``LayeredState.to_plain()`` and e.g. ``{"configuration": [...], "history":
{...}}``): this module does not import the engine.

Token counts: each message's cached count (and each overlay's) is stored
under the ``key`` of the measure the conversation counts with
(``ctxflow.tokens.message_measure`` gives one; the default chars/4 estimate
has none, counting again being as cheap). A restore with a measure of the
same key takes the stored counts instead of counting every message again;
any other measure counts afresh. Measures without a key store nothing. A
checkpointer's own ``measure`` is the one its restores use by default.

Gotcha: a checkpointer writes with ``expected_parent`` set to the checkpoint it
wrote or restored last. If another writer moved the session on, the write
raises :class:`~ctxflow.errors.StaleCheckpoint` and nothing changes; restore
the latest (or fork) and carry on from there.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

import attrs

from ctxflow._collector import paused
from ctxflow.errors import (
    CheckpointError,
    CorruptCheckpoint,
    InvalidMessage,
    StoreError,
)
from ctxflow.model import (
    Conversation,
    Facts,
    Message,
    OverlayPlaceholder,
    Placeholder,
    Source,
    facts_of,
)
from ctxflow.persistence._base import BaseStore
from ctxflow.persistence._bodies import body_hash, message_from_plain, message_to_plain, rebuild
from ctxflow.persistence._codec import pack_plain
from ctxflow.persistence._manifest import (
    PARENT_DELTA,
    Manifest,
    pack_hashes,
    pack_index,
    shared_tags,
)
from ctxflow.persistence._model import (
    CheckpointDraft,
    CheckpointRecord,
    Snapshot,
    check_store_id,
    new_checkpoint_id,
    new_session_id,
)
from ctxflow.persistence._protocol import Store
from ctxflow.protocols import Measure

__all__ = [
    "Checkpointer",
    "Restored",
    "StoreSource",
    "conversation_from_snapshot",
    "measure_key",
    "restore",
]


def measure_key(measure: Measure | None) -> str | None:
    """The stable name of what ``measure`` counts (its ``key``), or None if it has none."""
    key = getattr(measure, "key", None)
    return key if isinstance(key, str) and key else None


@attrs.frozen(kw_only=True)
class Restored:
    """What a restore gives back: the conversation, the plain state and chart, the record."""

    conversation: Conversation
    state: dict[str, Any]
    chart: dict[str, Any]
    record: CheckpointRecord


def _plain_mapping(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CheckpointError(
            f"'{name}' must be a plain mapping or None (got {type(value).__name__})",
            rule="not_plain",
        )
    return dict(value)


class StoreSource:
    """Fetches the bodies of a lazily restored conversation's placeholders from its store.

    Each body read is checked against its hash; a body that is missing or
    damaged raises :class:`~ctxflow.errors.CorruptCheckpoint`, and a store that
    can no longer be read (closed, unreachable) :class:`~ctxflow.errors.StoreError`,
    both naming the first message asked for.
    """

    __slots__ = ("checkpoint_id", "store")

    def __init__(self, store: BaseStore, checkpoint_id: str) -> None:
        self.store = store
        self.checkpoint_id = checkpoint_id

    def fetch(self, wanted: Sequence[Placeholder]) -> list[Message]:
        """The messages ``wanted`` stand for, their tags kept, read in one store read."""
        if not wanted:
            return []
        first = wanted[0].id
        try:
            bodies = self.store.read_bodies({p.key for p in wanted})
        except CorruptCheckpoint as exc:
            raise CorruptCheckpoint(
                f"hidden message {first!r} of checkpoint {self.checkpoint_id!r} must be "
                f"readable from its store ({exc.message})",
                rule="hidden_body",
                message_id=first,
            ) from None
        except Exception as exc:  # a closed or unreachable backend: its own errors too
            raise StoreError(
                f"hidden message {first!r} of checkpoint {self.checkpoint_id!r} needs its "
                f"store open to be read ({type(exc).__name__}: {exc})",
                rule="store_unavailable",
                message_id=first,
            ) from None
        messages: list[Message] = []
        for placeholder in wanted:
            body = bodies.get(placeholder.key)
            if (
                body is None
                or body_hash(body) != placeholder.key
                or body.get("id") != placeholder.id
            ):
                raise CorruptCheckpoint(
                    f"hidden message {placeholder.id!r} of checkpoint {self.checkpoint_id!r} "
                    f"must have its body {placeholder.key} in the store (missing or damaged)",
                    rule="hidden_body",
                    message_id=placeholder.id,
                )
            if isinstance(placeholder, OverlayPlaceholder):
                message = message_from_plain(body)  # an overlay's body holds its tags
            else:
                message = rebuild(body, placeholder.condense_parent, placeholder.truncation_parent)
            if message.role is not placeholder.role:
                raise CorruptCheckpoint(
                    f"hidden message {placeholder.id!r} must have the role its index gives "
                    f"({placeholder.role.value}, got {message.role.value})",
                    rule="hidden_body",
                    message_id=placeholder.id,
                )
            messages.append(message)
        return messages


def check_full_rule(full_every: int, full_ratio: float) -> None:
    """Refuse a full-manifest rule (``full_every``, ``full_ratio``: see :class:`Checkpointer`)
    that could never write a full manifest, or always would (``CheckpointError``)."""
    if full_every < 1:
        raise CheckpointError(f"'full_every' must be >= 1 (got {full_every})", rule="full_every")
    if not full_ratio >= 0:
        raise CheckpointError(f"'full_ratio' must be >= 0 (got {full_ratio})", rule="full_ratio")


def conversation_from_snapshot(
    snapshot: Snapshot, *, measure: Measure | None = None, source: Source | None = None
) -> Conversation:
    """Rebuild the Conversation of a loaded checkpoint (tags and overlays included).

    When ``measure`` has the key the checkpoint's counts were stored under,
    those counts are taken instead of measuring every message again; then a
    hidden message whose body the snapshot lacks (a view load) stays in the
    store, read from ``source``, left unbuilt until something reads it
    (:meth:`Conversation.lazy`), and so does an overlay laid over one. Without
    those counts every body must be in the snapshot (a view load reads them
    all then: :func:`~ctxflow.persistence._base.view_hashes`).
    """
    manifest = snapshot.manifest
    bodies, tags, untagged = snapshot.bodies, manifest.tags, (None, None)
    ids, hashes, index = manifest.ids, manifest.hashes, manifest.index
    key = measure_key(measure)
    counted = key is not None and key == manifest.measure and len(manifest.counts) == len(ids)
    stays: Iterable[bool] = itertools.repeat(False)
    if source is not None and counted and len(index) == len(hashes):
        # A hidden message whose body was not read and whose index facts are known
        # stays in the store.
        unread = map(operator.is_, map(bodies.get, hashes), itertools.repeat(None))
        hidden = map(tags.__contains__, ids)
        if len(ids) == len(hashes) and all(index):  # every message indexed
            stays = list(map(operator.and_, unread, hidden))
        else:
            indexed = map(operator.is_not, index, itertools.repeat(None))
            stays = list(map(all, zip(unread, hidden, indexed, strict=True)))
    read: list[Message] = []
    for message_id, digest in itertools.compress(
        zip(ids, hashes, strict=True), map(operator.not_, stays)
    ):
        body = bodies.get(digest)
        if body is None or body.get("id") != message_id:
            raise CorruptCheckpoint(
                f"message {message_id!r} must have its body {digest} in the store (missing)",
                rule="missing_body",
                message_id=message_id,
            )
        read.append(rebuild(body, *tags.get(message_id, untagged)))
    lazy = source is not None and isinstance(stays, list) and any(stays)
    overlays: dict[str, Message | str] = {}
    for message_id, digest in manifest.overlays.items():
        body = bodies.get(digest)
        if body is None and not lazy:
            raise _missing_overlay(message_id, digest)
        # One left in the store (over a message left there too) is the body's key.
        overlays[message_id] = digest if body is None else message_from_plain(body)
    try:
        if lazy:
            # Each position takes the next read message, or None where one stays.
            takes = (iter(read), itertools.repeat(None))
            return Conversation.lazy(
                list(map(next, map(takes.__getitem__, stays))),
                facts=index,
                keys=hashes,
                tags=tags,
                source=source,  # type: ignore[arg-type]  # lazy: a source is given
                counts=manifest.counts,
                measure=measure,
                overlays=overlays,
                overlay_counts=manifest.overlay_counts,
            )
        if counted:
            conversation = Conversation(read, measure=measure, counts=manifest.counts)
        else:
            conversation = Conversation(read, measure=measure)
        if overlays:
            laid = cast("dict[str, Message]", overlays)  # not lazy: every overlay was read
            conversation.set_overlays(laid, counts=manifest.overlay_counts if counted else {})
    except InvalidMessage as exc:
        if exc.rule == "unbuilt_overlay":
            message_id = exc.details["message_id"]
            raise _missing_overlay(message_id, manifest.overlays[message_id]) from None
        raise CorruptCheckpoint(
            f"a checkpoint must restore a valid conversation ({exc})", rule="conversation"
        ) from None
    return conversation


def _missing_overlay(message_id: str, digest: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(
        f"overlay of {message_id!r} must have its body {digest} in the store",
        rule="missing_body",
        message_id=message_id,
    )


def _load(
    store: Store, session_id: str, checkpoint_id: str | None, measure: Measure | None, lazy: bool
) -> tuple[Snapshot, Source | None]:
    """A checkpoint loaded whole, or (``lazy``, from a store that can) without its
    hidden bodies, with the source its placeholders read them from."""
    if lazy and isinstance(store, BaseStore):
        snapshot = store.load_view(session_id, checkpoint_id, measure=measure_key(measure))
        return snapshot, StoreSource(store, snapshot.record.id)
    return store.load(session_id, checkpoint_id), None


def _rebuilt(
    store: Store, session_id: str, checkpoint_id: str | None, measure: Measure | None, lazy: bool
) -> tuple[Snapshot, Conversation]:
    """A checkpoint loaded and its conversation rebuilt, the collector paused meanwhile
    (``ctxflow._collector``: what a restore builds all survives it)."""
    with paused(promote=True):
        snapshot, source = _load(store, session_id, checkpoint_id, measure, lazy)
        return snapshot, conversation_from_snapshot(snapshot, measure=measure, source=source)


def restore(
    store: Store,
    session_id: str,
    checkpoint_id: str | None = None,
    *,
    measure: Measure | None = None,
    lazy: bool = False,
) -> Restored:
    """Load a checkpoint (the session's latest when no id is given) and rebuild it.

    With ``lazy``, hidden messages stay in the store until read (see
    :meth:`BaseStore.load_view`): the store must stay open while the
    conversation is used.
    """
    snapshot, conversation = _rebuilt(store, session_id, checkpoint_id, measure, lazy)
    return Restored(
        conversation=conversation,
        state=dict(snapshot.manifest.state),
        chart=dict(snapshot.manifest.chart),
        record=snapshot.record,
    )


class _Tracked(NamedTuple):
    """What :meth:`Checkpointer._tracked` read from the change journal."""

    delta: dict[str, Any]
    appended: tuple[Message, ...]
    hashes: list[str]  # of the appended messages, the strings the manifest keeps
    laid: list[str]  # message ids whose overlay was laid anew
    facts: list[Facts]  # of the appended messages, sharing their strings


class _Recent:
    """The body hashes written lately (at most ``size``: older ones are forgotten, and a
    body sent again is only checked by the store, never stored twice)."""

    __slots__ = ("_seen", "size")

    def __init__(self, hashes: Iterable[str] = (), size: int = 8192) -> None:
        self.size = size
        self._seen: dict[str, None] = {}
        self.update(hashes)

    def __contains__(self, digest: object) -> bool:
        return digest in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def update(self, hashes: Iterable[str]) -> None:
        """Remember ``hashes`` (forgetting the oldest half when full)."""
        seen = self._seen
        seen.update(dict.fromkeys(hashes))
        if len(seen) > self.size:
            kept = list(seen)[len(seen) - self.size // 2 :]
            seen.clear()
            seen.update(dict.fromkeys(kept))


class Checkpointer:
    """Writes the checkpoints of one session to one store, each as a delta of the last."""

    def __init__(
        self,
        store: Store,
        session_id: str | None = None,
        *,
        full_every: int = 64,
        full_ratio: float = 1.0,
        clock: Callable[[], float] = time.time,
        measure: Measure | None = None,
        page_hidden: bool = False,
    ) -> None:
        check_full_rule(full_every, full_ratio)
        if type(page_hidden) is not bool:
            raise CheckpointError(
                f"'page_hidden' must be True or False (got {page_hidden!r})", rule="page_hidden"
            )
        if page_hidden and not isinstance(store, BaseStore):
            raise CheckpointError(
                "'page_hidden' needs a store that can read bodies back (a BaseStore; got "
                f"{type(store).__name__})",
                rule="page_hidden",
            )
        self.store = store
        self.page_hidden = page_hidden
        self.session_id = new_session_id() if session_id is None else check_store_id(session_id)
        self.full_every = full_every
        self.full_ratio = full_ratio
        self._delta_bytes = 0
        self._full_bytes = 0
        self.clock = clock
        self.measure = measure
        self._last_id: str | None = None
        self._manifest: Manifest | None = None
        # What was written, as objects (None: a message a lazy restore has not built).
        self._log: list[Message | None] = []
        self._overlays: dict[str, Message | None] = {}  # None: unbuilt when restored
        self._conversation: Conversation | None = None
        self._mark = 0
        self._since_full = 0
        self._written = _Recent()
        # Paging hidden messages out: the journal mark and log length at the last page-out.
        self._paged = (0, 0)

    def __repr__(self) -> str:
        return f"<Checkpointer session={self.session_id} last={self._last_id}>"

    @property
    def last_id(self) -> str | None:
        """The checkpoint the next capture will be based on (None before the first)."""
        return self._last_id

    def capture(
        self,
        conversation: Conversation,
        *,
        state: Mapping[str, Any] | None = None,
        chart: Mapping[str, Any] | None = None,
        phase: str | None = None,
        trigger: str | None = None,
        tokens: int | None = None,
    ) -> CheckpointRecord:
        """Write a checkpoint of ``conversation``, ``state`` and ``chart``; return its record.

        ``tokens`` defaults to the conversation's effective tokens. Raises
        ``StaleCheckpoint`` (nothing written) when the session moved on.
        """
        state_plain = _plain_mapping("state", state)
        chart_plain = _plain_mapping("chart", chart)
        bodies: dict[str, Mapping[str, Any]] = {}
        due = (
            self._since_full + 1 >= self.full_every
            and self._delta_bytes >= self.full_ratio * self._full_bytes
        )
        tracked = self._tracked(conversation, state_plain, chart_plain, bodies)
        if tracked is not None:
            manifest = self._manifest
            assert manifest is not None
            if due:
                manifest = self._advanced(manifest.copy(), tracked, state_plain)
            record = tracked.delta
            if due:  # in full, with the delta it replaces (a store may keep that instead)
                record = {**manifest.to_plain(), PARENT_DELTA: tracked.delta}
        else:
            manifest = self._compared(conversation, bodies, state_plain, chart_plain)
            found = None if self._manifest is None or due else manifest.delta_from(self._manifest)
            record = manifest.to_plain() if found is None else found
        weight = self._weigh(record)
        draft = CheckpointDraft(
            id=new_checkpoint_id(),
            session_id=self.session_id,
            parent_id=self._last_id,
            created_at=self.clock(),
            manifest=record,
            bodies=bodies,
            phase=phase,
            trigger=trigger,
            tokens=conversation.effective_tokens if tokens is None else tokens,
            message_count=len(conversation),
        )
        written = self.store.put(draft, expected_parent=self._last_id)
        if tracked is not None and not due:
            manifest = self._advanced(manifest, tracked, state_plain)
        self._last_id = written.id
        self._manifest = manifest
        self._follow(conversation, tracked)
        if draft.full:
            self._since_full, self._delta_bytes, self._full_bytes = 0, 0, weight
        else:
            self._since_full += 1
            self._delta_bytes += weight
        self._written.update(bodies)
        if self.page_hidden:
            self._page_out(conversation)
        return written

    def restore(
        self,
        checkpoint_id: str | None = None,
        *,
        measure: Measure | None = None,
        lazy: bool = False,
    ) -> Restored:
        """Restore a checkpoint of this session and continue capturing from it.

        ``measure`` defaults to this checkpointer's own, the one its captures
        say the conversation counts with. With ``lazy``, hidden messages stay in
        the store until read (see :func:`restore`).
        """
        measure = self.measure if measure is None else measure
        snapshot, conversation = _rebuilt(self.store, self.session_id, checkpoint_id, measure, lazy)
        manifest = snapshot.manifest  # the snapshot is this writer's alone: no copy
        self._last_id = snapshot.record.id
        self._manifest = manifest
        self._follow(conversation, None)
        self._since_full = snapshot.depth
        self._delta_bytes = self._full_bytes = 0
        # Any subset is right (the store checks what it holds): the newest messages' and
        # overlays' bodies, and the state's parts, which every capture names again.
        recent = self._written.size // 4
        self._written = _Recent(
            itertools.chain(
                manifest.hashes[-recent:],
                list(manifest.overlays.values())[-recent:],
                manifest.part_hashes(),
            )
        )
        self._paged = (conversation.change_mark, 0)
        return Restored(
            conversation=conversation,
            state=dict(snapshot.manifest.state),
            chart=dict(snapshot.manifest.chart),
            record=snapshot.record,
        )

    def _page_out(self, conversation: Conversation) -> None:
        """After a capture of ``conversation``: its hidden messages hidden or appended
        since the last page-out become placeholders reading their bodies back from the
        store (``page_hidden``), in the conversation and in what this writer keeps.

        The positions come from the change journal (cost: the change); a journal that
        no longer reaches the last page-out sends every position through again.
        """
        manifest = self._manifest
        if manifest is None or self._last_id is None or len(manifest.hashes) != len(conversation):
            return
        mark, length = self._paged
        changed = conversation.changes_since(mark)
        positions = (
            range(len(conversation))
            if changed is None
            else sorted({*changed, *range(length, len(conversation))})
        )
        self._paged = (conversation.change_mark, len(conversation))
        index, hashes = manifest.index, manifest.hashes
        assert isinstance(self.store, BaseStore)  # page_hidden needs one (checked)
        source = StoreSource(self.store, self._last_id)
        made: list[tuple[int, Placeholder]] = []
        for at in positions:
            if at >= len(conversation):
                continue
            if not conversation.is_built(at):
                continue  # a lazy restore's hidden message, in the store already
            message = conversation.at(at)
            if not message.hidden:
                continue
            facts = index[at] if at < len(index) else None
            if facts is None:
                facts = facts_of(message)
            if not isinstance(message, Placeholder):
                made.append(
                    (
                        at,
                        Placeholder.of(
                            facts,
                            key=hashes[at],
                            source=source,
                            condense_parent=message.condense_parent,
                            truncation_parent=message.truncation_parent,
                        ),
                    )
                )
            overlay = conversation.overlay(message.id)
            digest = manifest.overlays.get(message.id)
            if overlay is not None and digest is not None and not isinstance(overlay, Placeholder):
                # an overlay over a hidden message is never shown: its body can go too
                laid = OverlayPlaceholder.of(
                    facts, key=digest, source=source, condense_parent=None, truncation_parent=None
                )
                made.append((-1, laid))
        if made and conversation.page_out(p for _, p in made):
            log, overlays = self._log, self._overlays
            for at, placeholder in made:
                if at < 0:
                    if conversation.overlay(placeholder.id) is placeholder:
                        overlays[placeholder.id] = placeholder
                elif conversation.at(at) is placeholder:
                    if at < len(log):
                        log[at] = placeholder
                    if at < len(index):  # the placeholder holds the facts: no Facts kept
                        index[at] = placeholder

    def _as_written(self, message_id: str, overlay: Message, digest: str | None) -> bool:
        """True when ``overlay`` is the overlay this writer last wrote over ``message_id``
        (under ``digest``): the same object, or one a lazy restore left in the store,
        still unread, under that digest."""
        written = self._overlays.get(message_id)
        if overlay is written:
            return True
        return (
            written is None
            and type(overlay) is OverlayPlaceholder
            and not overlay.loaded
            and overlay.key == digest
        )

    # -- following the conversation -------------------------------------------

    def _stored(self, message: Message, bodies: dict[str, Any], *, overlay: bool = False) -> str:
        """The body hash of ``message`` (an overlay keeps its tags); its body goes into
        ``bodies`` unless it was written lately."""
        body = message_to_plain(message, with_tags=overlay)
        digest = body_hash(body)
        if digest not in self._written:
            bodies[digest] = body
        return digest

    def _follow(self, conversation: Conversation, tracked: _Tracked | None) -> None:
        """Remember what was written of ``conversation``: its messages and overlays as
        objects (for identity checks) and its change-journal mark."""
        if tracked is None or conversation is not self._conversation:
            self._log = conversation.log_as_built()  # None where a lazy restore left one
            self._overlays = conversation.overlays_as_built()
        else:
            log, delta = self._log, tracked.delta
            log += tracked.appended
            for message_id in delta.get("tags") or ():
                log[conversation.index_of(message_id)] = conversation.original(message_id)
            for message_id in delta.get("removed_overlays") or ():
                self._overlays.pop(message_id, None)
            for message_id in tracked.laid:
                overlay = conversation.overlay(message_id)
                if overlay is not None:
                    self._overlays[message_id] = overlay
        self._conversation = conversation
        self._mark = conversation.change_mark

    def _tracked(
        self,
        conversation: Conversation,
        state: dict[str, Any],
        chart: dict[str, Any],
        bodies: dict[str, Any],
    ) -> _Tracked | None:
        """The delta record of ``conversation`` since the last capture, read from its
        change journal (cost: the change); None when the journal cannot tell (another
        conversation, a new measure, a lost mark)."""
        manifest = self._manifest
        if manifest is None or conversation is not self._conversation:
            return None
        key = conversation.measure_key
        n = len(manifest.hashes)
        if key != manifest.measure or len(conversation) < n or len(self._log) != n:
            return None
        if n and conversation.at(n - 1).id != manifest.ids[-1]:
            return None
        positions = conversation.changes_since(self._mark)
        if positions is None:
            return None
        appended = conversation.since(n)
        hashes: list[str] = []
        tags: dict[str, list[str | None]] = {}
        for message in appended:
            hashes.append(self._stored(message, bodies))
            if message.hidden:
                tags[message.id] = [message.condense_parent, message.truncation_parent]
        delta: dict[str, Any] = {"kind": "delta", "hashes": pack_hashes(hashes)}
        facts = [facts_of(m) for m in appended]
        if appended:
            delta["index"] = pack_index(facts)
        if key is not None:
            delta["counts"] = [conversation.original_tokens(m.id) for m in appended]
        overlays: dict[str, str] = {}
        removed: list[str] = []
        counted: dict[str, int] = {}
        laid: list[str] = []
        for at in sorted(set(positions)):
            if at >= len(conversation):
                continue  # appended by a compression taken back
            message = conversation.at(at)
            message_id = message.id
            if at < n:
                was = manifest.tags.get(message_id)
                now = (message.condense_parent, message.truncation_parent)
                if message.hidden and now != was:
                    tags[message_id] = list(now)
                elif not message.hidden and was is not None:
                    tags[message_id] = [None, None]
            overlay = conversation.overlay(message_id)
            if overlay is None:
                if message_id in manifest.overlays:
                    removed.append(message_id)
                continue
            if (
                not self._as_written(message_id, overlay, manifest.overlays.get(message_id))
                or message_id not in manifest.overlays
            ):
                digest = self._stored(overlay, bodies, overlay=True)
                if manifest.overlays.get(message_id) != digest:
                    overlays[message_id] = digest
                laid.append(message_id)
            if key is not None:
                count = conversation.tokens(message_id)
                if manifest.overlay_counts.get(message_id) != count:
                    counted[message_id] = count
        if tags:
            delta["tags"] = tags
        if overlays:
            delta["overlays"] = overlays
        if removed:
            delta["removed_overlays"] = removed
        if counted:
            delta["overlay_counts"] = counted
        delta.update(manifest.state_delta(state, bodies, self._written))
        if chart != manifest.chart:
            delta["chart"] = chart
        return _Tracked(delta, appended, hashes, laid, facts)

    @staticmethod
    def _advanced(manifest: Manifest, tracked: _Tracked, state: dict[str, Any]) -> Manifest:
        """``manifest`` with the tracked delta applied in place (ids and whole state too),
        holding the hash strings and index facts :meth:`_tracked` made (sharing the
        messages' own strings) rather than unpacked copies."""
        n = len(manifest.hashes)
        delta = tracked.delta
        manifest.apply(
            {k: v for k, v in delta.items() if k != "index"} if "index" in delta else delta
        )
        manifest.hashes[n:] = tracked.hashes
        manifest.index[n:] = tracked.facts
        manifest.ids.extend(m.id for m in tracked.appended)
        manifest.state = state
        return manifest

    def _compared(
        self,
        conversation: Conversation,
        bodies: dict[str, Any],
        state: dict[str, Any],
        chart: dict[str, Any],
    ) -> Manifest:
        """The manifest of ``conversation`` found by comparing it with what was written
        last (the whole log and every overlay): for a conversation the journal
        cannot follow."""
        log = tuple(conversation.messages)
        key = conversation.measure_key
        manifest = self._extend(log, bodies, conversation)
        if manifest is None:
            manifest = Manifest(measure=key)
            self._append(manifest, log, bodies, conversation)
        elif manifest.measure != key:
            manifest.measure = key
            manifest.counts = self._counts(log, conversation)
        overlays = conversation.overlays
        previous = self._manifest.overlays if self._manifest is not None else {}
        manifest.overlays = {}
        for message_id, overlay in overlays.items():
            if message_id in previous and self._as_written(
                message_id, overlay, previous[message_id]
            ):
                manifest.overlays[message_id] = previous[message_id]
                continue
            manifest.overlays[message_id] = self._stored(overlay, bodies, overlay=True)
        manifest.overlay_counts = (
            {k: conversation.tokens(k) for k in overlays} if key is not None else {}
        )
        manifest.set_state(state, bodies, self._written)
        manifest.chart = chart
        return manifest

    # -- manifest building ---------------------------------------------------

    @staticmethod
    def _weigh(record: Mapping[str, Any]) -> int:
        return len(pack_plain(record, what="state and chart"))

    def _counts(self, messages: tuple[Message, ...], conversation: Conversation) -> list[int]:
        """The cached counts of ``messages`` when their measure has a key (else none)."""
        if conversation.measure_key is None:
            return []
        return [conversation.original_tokens(m.id) for m in messages]

    def _append(
        self,
        manifest: Manifest,
        messages: tuple[Message, ...],
        bodies: dict[str, Any],
        conversation: Conversation,
    ) -> None:
        for message in messages:
            manifest.ids.append(message.id)
            manifest.index.append(facts_of(message))
            manifest.hashes.append(self._stored(message, bodies))
            if message.hidden:
                manifest.tags[message.id] = shared_tags(
                    message.condense_parent, message.truncation_parent
                )
        manifest.counts.extend(self._counts(messages, conversation))

    def _extend(
        self, log: tuple[Message, ...], bodies: dict[str, Any], conversation: Conversation
    ) -> Manifest | None:
        """The last manifest extended to ``log``, or None when ``log`` does not extend it."""
        if self._manifest is None:
            return None
        previous = self._log
        n = len(previous)
        if len(log) < n:
            return None
        manifest = self._manifest.copy()
        # Tuple equality checks identity first: the common case (nothing retagged) is C speed.
        if list(log[:n]) != previous:
            for index in range(n):
                old, new = previous[index], log[index]
                if old is new:
                    continue
                if old is None:  # unbuilt when written: the body stored, its tags may differ
                    if new.id != self._manifest.ids[index]:
                        return None
                elif new.id != old.id or message_to_plain(new) != message_to_plain(old):
                    return None
                if new.hidden:
                    manifest.tags[new.id] = shared_tags(new.condense_parent, new.truncation_parent)
                else:
                    manifest.tags.pop(new.id, None)
        self._append(manifest, log[n:], bodies, conversation)
        return manifest
