"""LangGraph on ctxflow's stores: :class:`CtxflowSaver`, a ``BaseCheckpointSaver``.

Install the extra (``pip install 'ctxflow[langgraph]'``) and pass the saver to a graph::

    from ctxflow.integrations.langgraph import CtxflowSaver

    with CtxflowSaver.from_conn_string("sqlite:///agent.db") as saver:
        graph = builder.compile(checkpointer=saver)

See ``docs/langgraph.md``.
"""

from ctxflow.integrations.langgraph._saver import CtxflowSaver

__all__ = ["CtxflowSaver"]
