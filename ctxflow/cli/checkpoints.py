"""``ctxflow checkpoints``: list, show, diff and restore the checkpoints of a store.

``--store`` takes a SQLite file or a store URL (``sqlite:///``, ``redis://``,
``postgresql://``: see :func:`ctxflow.stores.open_store`). The store must
exist (this command never creates one) and is opened read-only where the
backend can be (SQLite, PostgreSQL). A checkpoint is named by its id or by the
``seq`` number ``list`` prints. ``restore`` writes the conversation as corpus
JSONL: the effective view by default (what a model would be shown), or the
whole log with ``--view log``. With ``--out`` it writes atomically, never over
the store, and over an existing file only when ``restore`` wrote it (or with
``--force``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctxflow.cli.files import StagedFiles, open_store_option, output_target, store_url
from ctxflow.errors import CheckpointError, CheckpointNotFound, FormatError, StoreError
from ctxflow.model import Transcript, dump_transcript
from ctxflow.persistence import BaseStore, CheckpointRecord, Snapshot, conversation_from_snapshot
from ctxflow.stores import StoreURL

__all__ = ["register"]

# The ``source`` of every transcript ``restore`` writes: how it knows a file is its own.
RESTORED = "ctxflow checkpoint"


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``checkpoints`` sub-command's arguments and its actions."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        p.add_argument(
            "--store",
            required=True,
            help="the store: a SQLite file, sqlite:///path, redis://host:port/db or "
            "postgresql://user@host/db",
        )
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    listing = action("list", "list sessions, or the checkpoints of one session")
    listing.add_argument("session", nargs="?", help="a session id (default: list sessions)")
    show = action("show", "show one checkpoint (default: the session's latest)")
    show.add_argument("session")
    show.add_argument("checkpoint", nargs="?", help="a checkpoint id or seq number")
    diff = action("diff", "what changed between two checkpoints of a session")
    diff.add_argument("session")
    diff.add_argument("old", help="a checkpoint id or seq number")
    diff.add_argument("new", help="a checkpoint id or seq number")
    rest = action("restore", "write a checkpoint's conversation as corpus JSONL")
    rest.add_argument("session")
    rest.add_argument("checkpoint", nargs="?", help="a checkpoint id or seq number")
    rest.add_argument("--out", help="write to this file (default: print)")
    rest.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out file that restore did not write (never the store)",
    )
    rest.add_argument(
        "--view", choices=("effective", "log"), default="effective", help="which messages"
    )


def _store(value: str) -> StoreURL:
    """The store ``--store`` names, checked (not opened): one that can hold checkpoints."""
    url = store_url(value)
    if url.kind == "memory":
        raise StoreError(
            "--store must name a store that keeps checkpoints: a SQLite file or a server URL "
            "(got 'memory', which holds none)",
            rule="store_memory",
            where=value,
        )
    if url.path is not None and not url.path.is_file():
        raise StoreError(f"--store must name an existing file (got {value!r})", rule="no_store")
    return url


def _load(store: BaseStore, session: str, ref: str | None) -> Snapshot:
    """The checkpoint ``ref`` names in ``session`` (an id or a seq number; None: the latest)."""
    if ref is None:
        return store.load(session, None)
    records = store.checkpoints(session)
    if any(r.id == ref for r in records):
        return store.load(session, ref)
    if ref.isdigit():
        match = next((r for r in records if r.seq == int(ref)), None)
        if match is not None:
            return store.load(session, match.id)
    raise CheckpointNotFound(
        f"a checkpoint must be named by an id or a seq number of session {session!r} "
        f"(got {ref!r}; seq {records[0].seq}..{records[-1].seq})"
        if records
        else f"session {session!r} must exist in the store (it has no checkpoints)",
        rule="checkpoint_ref",
        session=session,
        checkpoint=ref,
    )


def _latest_source(store: BaseStore, session: str, checkpoint: str) -> str | None:
    """The transcript of a session's latest checkpoint (None when it cannot be read: a
    listing still lists the session; ``show`` names the failure)."""
    try:
        return _source(store.load(session, checkpoint))
    except CheckpointError:
        return None


def _source(snapshot: Snapshot) -> str | None:
    """The transcript file ``ctxflow run`` recorded in the session's data, if any."""
    data = snapshot.manifest.state.get("data")
    value = data.get("transcript") if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else None


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row(record: CheckpointRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "seq": record.seq,
        "parent": record.parent_id,
        "created": _when(record.created_at),
        "phase": record.phase,
        "trigger": record.trigger,
        "tokens": record.tokens,
        "messages": record.message_count,
        "size": record.size,
        "manifest": "full" if record.full else "delta",
    }


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    print()


def run(args: argparse.Namespace) -> int:
    """Run one action against the store; exit 0."""
    # A bad store URL, or an output that would be refused, is refused before the store is
    # even opened.
    url = _store(args.store)
    args.target = _out_target(args, url) if args.action == "restore" and args.out else None
    store = open_store_option(url, read_only=url.kind in ("sqlite", "postgres"))
    try:
        handler = {"list": _list, "show": _show, "diff": _diff, "restore": _restore}
        return handler[args.action](store, args)
    finally:
        store.close()


def _list(store: BaseStore, args: argparse.Namespace) -> int:
    if args.session is None:
        rows = []
        for session in store.sessions():
            latest = store.latest(session)
            rows.append(
                {
                    "session": session,
                    "checkpoints": latest.seq,
                    "latest": latest.id,
                    "phase": latest.phase,
                    "updated": _when(latest.created_at),
                    "transcript": _latest_source(store, session, latest.id),
                }
            )
        if args.json:
            _print_json(rows)
            return 0
        print(f"{'session':<28} {'count':>5}  {'phase':<12} {'updated (UTC)':<19}  transcript")
        for row in rows:
            print(
                f"{row['session']:<28} {row['checkpoints']:>5}  {row['phase'] or '-':<12} "
                f"{row['updated']:<19}  {row['transcript'] or '-'}"
            )
        return 0
    records = [_row(r) for r in store.checkpoints(args.session)]
    if args.json:
        _print_json(records)
        return 0
    source = _source(store.load(args.session, None))
    if source is not None:
        print(f"session {args.session} (transcript {source})")
    print(
        f"{'seq':>4} {'checkpoint':<20} {'phase':<12} {'trigger':<9} {'msgs':>5} "
        f"{'tokens':>8} {'bytes':>8} manifest"
    )
    for r in records:
        print(
            f"{r['seq']:>4} {r['id']:<20} {r['phase'] or '-':<12} {r['trigger'] or '-':<9} "
            f"{r['messages']:>5} {r['tokens']:>8} {r['size']:>8} {r['manifest']}"
        )
    return 0


def _show(store: BaseStore, args: argparse.Namespace) -> int:
    snapshot = _load(store, args.session, args.checkpoint)
    info = {
        "session": args.session,
        "transcript": _source(snapshot),
        **_row(snapshot.record),
        "tagged": len(snapshot.manifest.tags),
        "overlays": len(snapshot.manifest.overlays),
        "bodies": len(snapshot.bodies),
        "state_keys": sorted(snapshot.manifest.state),
        "chart": snapshot.manifest.chart,
    }
    if args.json:
        _print_json(info)
        return 0
    for key, value in info.items():
        print(f"{key:<11} {value}")
    return 0


def _diff(store: BaseStore, args: argparse.Namespace) -> int:
    old = _load(store, args.session, args.old).manifest
    new = _load(store, args.session, args.new).manifest
    prefix = new.ids[: len(old.ids)] == old.ids
    before = set(old.ids)
    after = set(new.ids)
    ids = before | after
    state_keys = set(old.state) | set(new.state)
    result: dict[str, Any] = {
        "appended": [i for i in new.ids if i not in before],
        "removed": [i for i in old.ids if i not in after],
        "extends": prefix,
        "tags_changed": sorted(i for i in ids if old.tags.get(i) != new.tags.get(i)),
        "overlays_changed": sorted(
            i
            for i in set(old.overlays) | set(new.overlays)
            if old.overlays.get(i) != new.overlays.get(i)
        ),
        "state_keys_changed": sorted(k for k in state_keys if old.state.get(k) != new.state.get(k)),
        "chart_changed": old.chart != new.chart,
    }
    if args.json:
        _print_json(result)
        return 0
    for key, value in result.items():
        shown = value if isinstance(value, bool) else f"{len(value)} {value[:10]}"
        print(f"{key:<18} {shown}")
    return 0


def _written_by_restore(path: Path) -> bool:
    """True when every line of ``path`` is a transcript ``restore`` wrote (and there is one)."""
    seen = False
    try:
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                if not raw.startswith(b"{"):
                    return False
                line = json.loads(raw)
                if not (
                    isinstance(line, dict)
                    and line.get("source") == RESTORED
                    and isinstance(line.get("messages"), list)
                ):
                    return False
                seen = True
    except (OSError, ValueError):
        return False
    return seen


def _out_target(args: argparse.Namespace, url: StoreURL) -> Path:
    """The --out file, refused when it is the store or a file restore did not write."""
    target = output_target(args.out, "--out")
    if target.exists():
        if url.path is not None and os.path.samefile(target, url.path):
            raise FormatError(
                f"--out must not name the store (got {args.out!r})",
                rule="out_is_store",
                where=args.out,
            )
        if not args.force and not _written_by_restore(target):
            raise FormatError(
                f"--out must name a new file or one restore wrote; use --force to replace "
                f"another (got {args.out!r})",
                rule="out_exists",
                where=args.out,
            )
    return target


def _restore(store: BaseStore, args: argparse.Namespace) -> int:
    target = args.target
    snapshot = _load(store, args.session, args.checkpoint)
    conversation = conversation_from_snapshot(snapshot)
    messages = conversation.effective() if args.view == "effective" else conversation.messages
    transcript = Transcript(
        id=f"{args.session}/{snapshot.record.id}",
        messages=tuple(messages),
        source=RESTORED,
        meta={"phase": snapshot.record.phase, "view": args.view},
    )
    line = json.dumps(dump_transcript(transcript), ensure_ascii=False)
    if target is None:
        print(line)
        return 0
    with StagedFiles() as staged:
        staged.add(target, "--out").write_text(line + "\n", encoding="utf-8")
    print(f"wrote {len(messages)} messages to {args.out}", file=sys.stderr)
    return 0
