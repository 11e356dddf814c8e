"""Compress real conversations with the ladder, recall what it hid, and undo it.

Run it: ``python examples/compress_and_recall.py``. Two bundled transcripts
(MIT, see ``transcripts/README.md``), counted with cl100k, each get a budget a
quarter of their size:

- the OpenHands run: the compressed view stays valid for both APIs; a cleared
  tool result comes back by the call id its placeholder points to (what a
  "recall" tool given to the model would do); ``undo`` brings the whole view back;
- the tau-bench customer chat: the details the customer stated in the turns the
  ladder hid (a user id, a reservation) are kept in semantic memory.
"""

from __future__ import annotations

from pathlib import Path

from ctxflow.compression import CLEARED, OVERLAY_KIND, Ladder, fixed_tokens, recall, undo
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, check, read_transcripts
from ctxflow.tokens import counter_for, message_measure

TRANSCRIPTS = Path(__file__).parent / "transcripts"
MEASURE = message_measure(counter_for("cl100k_base"))


def load(name: str) -> Conversation:
    """The first conversation of a bundled transcript file, counted with cl100k."""
    return next(read_transcripts(TRANSCRIPTS / name)).conversation(measure=MEASURE)


def clear_recall_undo() -> None:
    """Compress the OpenHands run; recall a cleared result; undo the run."""
    conversation = load("openhands-ponyc-4588.jsonl")
    before = conversation.effective()
    fixed = fixed_tokens(conversation)  # the system prompt and the task stay
    budget = (conversation.effective_tokens - fixed) // 4
    print(f"before: {len(before)} messages, {conversation.effective_tokens:,} tokens")

    report = Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed).report
    print(f"rungs used: {', '.join(report.rungs_used)}")
    print(f"after: {conversation.effective_count} messages, {report.tokens_after:,} tokens")
    print(f"within target: {report.reached_target} (target {report.target:,})")
    view = conversation.effective()
    print(f"valid: anthropic={check(view).ok} openai={check(view, api='openai').ok}")

    cleared = next(m for m in view if m.metadata.get(OVERLAY_KIND) == CLEARED)
    block = cleared.tool_results[0]
    print(f"placeholder: {block.text}")
    original = recall(conversation, block.tool_use_id)
    print(f"recalled: {len(original.tool_results[0].text):,} characters by its call id")

    undo(conversation, report)
    restored = conversation.effective() == before
    print(f"undone: {conversation.effective_count} messages, view restored={restored}")


def details_to_memory() -> None:
    """Compress the tau-bench chat; the customer's stated details stay in memory."""
    conversation = load("tau-bench-airline-task00.jsonl")
    fixed = fixed_tokens(conversation)
    budget = (conversation.effective_tokens - fixed) // 4
    result = Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed)
    hidden = len(result.report.hidden)
    facts = result.state.memory.semantic
    print(f"chat: {hidden} messages hidden, {len(facts)} stated details kept in memory")
    for fact in facts:
        print(f"  kept: {fact.value}")


def main() -> None:
    """Both walkthroughs."""
    clear_recall_undo()
    details_to_memory()


if __name__ == "__main__":
    main()
