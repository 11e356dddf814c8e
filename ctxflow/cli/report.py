"""``ctxflow report``: per-message tokens and validity of a recorded transcript.

Exit status 0 when the transcript is valid for both APIs, 1 when it is not, 2
when it cannot be read as a transcript at all (a message the model refuses,
e.g. text with a lone surrogate, names the file and line).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ctxflow.errors import FormatError
from ctxflow.model import Message, Transcript, check, messages_to_anthropic, read_transcripts
from ctxflow.tokens import DEFAULT_MODEL, counter_for, get_profile, message_measure

__all__ = ["register"]


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``report`` sub-command's arguments."""
    parser.add_argument("file", help="a JSONL file in the corpus format")
    parser.add_argument("--id", help="the conversation to report (default: the first)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model profile ({DEFAULT_MODEL})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _pick(path: str, wanted: str | None) -> Transcript:
    ids = [wanted] if wanted else None
    for transcript in read_transcripts(path, ids=ids):
        return transcript
    what = f"no conversation with id {wanted!r}" if wanted else "no conversation"
    raise FormatError(f"{path}: {what}", rule="not_found", where=path)


def _summary(message: Message) -> str:
    parts = []
    for block in message.content:
        if block.type == "text":
            parts.append(repr(getattr(block, "text", "")[:40]))
        elif block.type == "tool_use":
            parts.append(f"tool_use {getattr(block, 'name', '')}")
        elif block.type == "tool_result":
            parts.append("tool_result" + (" (error)" if getattr(block, "is_error", False) else ""))
        else:
            parts.append(block.type)
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 0 when valid for both APIs, 1 otherwise."""
    profile = get_profile(args.model)
    transcript = _pick(args.file, args.id)
    measure = message_measure(counter_for(profile.encoding), overhead=profile.per_message_overhead)
    conversation = transcript.conversation(measure=measure)
    reports = {api: check(conversation.messages, api=api) for api in ("anthropic", "openai")}
    bad_at: dict[int, list[str]] = {}
    for api, rep in reports.items():
        for violation in rep.violations:
            bad_at.setdefault(violation.index, []).append(f"{api}:{violation.rule}")
    rows: list[dict[str, Any]] = []
    running = 0
    for index, message in enumerate(conversation.messages):
        tokens = conversation.tokens(message.id)
        running += tokens
        rows.append(
            {
                "index": index,
                "role": message.role.value,
                "tokens": tokens,
                "cumulative": running,
                # The JSON report carries the blocks themselves; the table a summary.
                "content": (
                    messages_to_anthropic([message])[0]["content"]
                    if args.json
                    else _summary(message)
                ),
                "problems": bad_at.get(index, []),
            }
        )
    ok = all(r.ok for r in reports.values())
    pending = reports["anthropic"].pending
    if args.json:
        out = {
            "id": transcript.id,
            "source": transcript.source,
            "model": profile.name,
            "encoding": profile.encoding,
            "messages": rows,
            "total_tokens": conversation.total_tokens,
            "input_budget": profile.input_budget,
            "valid": {api: rep.ok for api, rep in reports.items()},
            "pending_tool_calls": list(pending),
        }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0 if ok else 1
    print(f"{transcript.id}  ({transcript.source})")
    print(
        f"model {profile.name}, encoding {profile.encoding}, input budget {profile.input_budget:,}"
    )
    print(f"{'#':>4} {'role':<9} {'tokens':>7} {'total':>8}  content")
    for row in rows:
        flag = "  !! " + ", ".join(row["problems"]) if row["problems"] else ""
        print(
            f"{row['index']:>4} {row['role']:<9} {row['tokens']:>7} {row['cumulative']:>8}  "
            f"{row['content'][:60]}{flag}"
        )
    share = conversation.total_tokens / profile.input_budget
    print(
        f"{len(rows)} messages, {conversation.total_tokens:,} tokens "
        f"({share:.1%} of the input budget)"
    )
    for api, rep in reports.items():
        verdict = "valid" if rep.ok else f"{len(rep.violations)} violation(s)"
        print(
            f"{api}: {verdict}" + (f"; pending tool call {', '.join(pending)}" if pending else "")
        )
    return 0 if ok else 1
