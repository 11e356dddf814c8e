"""Integrations with agent frameworks, each an optional extra the core never imports.

- :mod:`ctxflow.integrations.langgraph` (extra ``[langgraph]``): ``CtxflowSaver``, a
  LangGraph checkpointer on ctxflow's stores;
- :mod:`ctxflow.integrations.langchain` (extra ``[langchain]``): lossless message
  conversion and an agent middleware for ``create_agent``.

Importing this package imports neither framework.
"""
