"""ctxflow: context management for LLM agents, as an explicit statechart.

The top level holds the names most programs need; everything else lives in
its namespace (``ctxflow.compression``, ``ctxflow.stores``,
``ctxflow.adapters``, ``ctxflow.testing``, ...).
"""

from importlib.metadata import PackageNotFoundError, version

from ctxflow.budget import Window, build_window
from ctxflow.context import AgentContext
from ctxflow.engine import AsyncEngine, Engine, load_chart
from ctxflow.errors import BudgetExceeded, CtxflowError
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, check
from ctxflow.sessions import ContextManager
from ctxflow.tokens import get_profile

try:
    __version__ = version("ctxflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AgentContext",
    "AsyncEngine",
    "BudgetExceeded",
    "ContextManager",
    "Conversation",
    "CtxflowError",
    "Engine",
    "LayeredState",
    "Message",
    "Window",
    "__version__",
    "build_window",
    "check",
    "get_profile",
    "load_chart",
]
