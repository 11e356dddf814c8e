"""LangChain: lossless message conversion and a ``create_agent`` middleware.

Install the extra (``pip install 'ctxflow[langchain]'``)::

    from ctxflow.integrations.langchain import CtxflowMiddleware, from_ctxflow, to_ctxflow

See ``docs/langchain.md``.
"""

from ctxflow.integrations.langchain._messages import from_ctxflow, to_ctxflow
from ctxflow.integrations.langchain._middleware import CtxflowMiddleware

__all__ = ["CtxflowMiddleware", "from_ctxflow", "to_ctxflow"]
