"""holysheep-trio: a trio-native client for OpenAI-compatible streaming chat APIs.

The SSE parser lives in :mod:`holysheep_trio.sse` and is usable on its own; the embedded
OpenAI-compatible server lives in :mod:`holysheep_trio.simulator`; the Responses API's value
types live in :mod:`holysheep_trio.responses` (and are re-exported here).

Public names are imported lazily (PEP 562), so that ``import holysheep_trio.sse`` stays free of
trio and httpx2: importing a submodule always runs this file first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from . import otel as otel
    from ._fleet import LimitStore as LimitStore
    from ._fleet import open_limit_store as open_limit_store
    from ._responses_stream import ResponseStream as ResponseStream
    from ._transport import TransportStatistics as TransportStatistics
    from ._transport import TrioTransport as TrioTransport
    from .batch import BatchResult as BatchResult
    from .batch import ChatRequest as ChatRequest
    from .budget import AttemptBill as AttemptBill
    from .budget import Budget as Budget
    from .budget import BudgetReport as BudgetReport
    from .budget import ModelUsage as ModelUsage
    from .budget import PeriodReport as PeriodReport
    from .budget import Reservation as Reservation
    from .budget import open_budget as open_budget
    from .client import ChatStream as ChatStream
    from .client import Client as Client
    from .client import open_client as open_client
    from .errors import APIConnectionError as APIConnectionError
    from .errors import APIError as APIError
    from .errors import APIStatusError as APIStatusError
    from .errors import APIStreamError as APIStreamError
    from .errors import APITimeoutError as APITimeoutError
    from .errors import AuthenticationError as AuthenticationError
    from .errors import BadRequestError as BadRequestError
    from .errors import BudgetExceededError as BudgetExceededError
    from .errors import ClientClosedError as ClientClosedError
    from .errors import ConfigurationError as ConfigurationError
    from .errors import ConnectionLostError as ConnectionLostError
    from .errors import HolySheepError as HolySheepError
    from .errors import LedgerError as LedgerError
    from .errors import LedgerUnavailableError as LedgerUnavailableError
    from .errors import NotFoundError as NotFoundError
    from .errors import OverloadedError as OverloadedError
    from .errors import PendingQueueFullError as PendingQueueFullError
    from .errors import PermissionDeniedError as PermissionDeniedError
    from .errors import PreviousResponseNotFoundError as PreviousResponseNotFoundError
    from .errors import RateLimitError as RateLimitError
    from .errors import ServerError as ServerError
    from .errors import StreamInterruptedError as StreamInterruptedError
    from .errors import StreamProtocolError as StreamProtocolError
    from .errors import UnknownPriceError as UnknownPriceError
    from .health import Connected as Connected
    from .health import ConnectionLost as ConnectionLost
    from .health import FailedBack as FailedBack
    from .health import HealthConfig as HealthConfig
    from .health import HealthEvent as HealthEvent
    from .health import HealthMonitor as HealthMonitor
    from .health import HealthState as HealthState
    from .health import HealthStatistics as HealthStatistics
    from .health import Reconnected as Reconnected
    from .health import Reconnecting as Reconnecting
    from .health import open_health_monitor as open_health_monitor
    from .ledger import Ledger as Ledger
    from .models import ChatChunk as ChatChunk
    from .models import Choice as Choice
    from .models import Completion as Completion
    from .models import CompletionTokensDetails as CompletionTokensDetails
    from .models import Delta as Delta
    from .models import Message as Message
    from .models import PromptTokensDetails as PromptTokensDetails
    from .models import ToolCall as ToolCall
    from .models import ToolCallDelta as ToolCallDelta
    from .models import Usage as Usage
    from .pool import Limits as Limits
    from .pool import ModelStatistics as ModelStatistics
    from .pool import Percentiles as Percentiles
    from .pool import PoolStatistics as PoolStatistics
    from .pool import RateLimit as RateLimit
    from .prices import DEFAULT_PRICES as DEFAULT_PRICES
    from .prices import ModelPrice as ModelPrice
    from .responses import ContentPart as ContentPart
    from .responses import ContentPartAdded as ContentPartAdded
    from .responses import ContentPartDone as ContentPartDone
    from .responses import FunctionCall as FunctionCall
    from .responses import FunctionCallArgumentsDelta as FunctionCallArgumentsDelta
    from .responses import FunctionCallArgumentsDone as FunctionCallArgumentsDone
    from .responses import IncompleteDetails as IncompleteDetails
    from .responses import InputTokensDetails as InputTokensDetails
    from .responses import OutputItem as OutputItem
    from .responses import OutputItemAdded as OutputItemAdded
    from .responses import OutputItemDone as OutputItemDone
    from .responses import OutputMessage as OutputMessage
    from .responses import OutputRefusal as OutputRefusal
    from .responses import OutputText as OutputText
    from .responses import OutputTextDelta as OutputTextDelta
    from .responses import OutputTextDone as OutputTextDone
    from .responses import OutputTokensDetails as OutputTokensDetails
    from .responses import ReasoningItem as ReasoningItem
    from .responses import ReasoningSummaryPartAdded as ReasoningSummaryPartAdded
    from .responses import ReasoningSummaryPartDone as ReasoningSummaryPartDone
    from .responses import ReasoningSummaryTextDelta as ReasoningSummaryTextDelta
    from .responses import ReasoningSummaryTextDone as ReasoningSummaryTextDone
    from .responses import ReasoningText as ReasoningText
    from .responses import ReasoningTextDelta as ReasoningTextDelta
    from .responses import ReasoningTextDone as ReasoningTextDone
    from .responses import RefusalDelta as RefusalDelta
    from .responses import RefusalDone as RefusalDone
    from .responses import Response as Response
    from .responses import ResponseCompleted as ResponseCompleted
    from .responses import ResponseCreated as ResponseCreated
    from .responses import ResponseError as ResponseError
    from .responses import ResponseErrorEvent as ResponseErrorEvent
    from .responses import ResponseEvent as ResponseEvent
    from .responses import ResponseFailed as ResponseFailed
    from .responses import ResponseIncomplete as ResponseIncomplete
    from .responses import ResponseInProgress as ResponseInProgress
    from .responses import ResponseQueued as ResponseQueued
    from .responses import ResponseUsage as ResponseUsage
    from .responses import UnknownContentPart as UnknownContentPart
    from .responses import UnknownOutputItem as UnknownOutputItem
    from .responses import UnknownResponseEvent as UnknownResponseEvent
    from .retry import RetryPolicy as RetryPolicy
    from .router import CheapestWithinLatency as CheapestWithinLatency
    from .router import Route as Route
    from .router import RoutedCompletion as RoutedCompletion
    from .router import Router as Router
    from .router import RouterView as RouterView
    from .router import RoutingPolicy as RoutingPolicy
    from .router import SeedRules as SeedRules
    from .router import Task as Task
    from .session import Session as Session
    from .session import SessionStatistics as SessionStatistics
    from .timeouts import Timeouts as Timeouts

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "LimitStore": "._fleet",
    "open_limit_store": "._fleet",
    "BatchResult": ".batch",
    "ChatRequest": ".batch",
    "AttemptBill": ".budget",
    "Budget": ".budget",
    "BudgetReport": ".budget",
    "ModelUsage": ".budget",
    "PeriodReport": ".budget",
    "Reservation": ".budget",
    "open_budget": ".budget",
    "ChatStream": ".client",
    "ResponseStream": "._responses_stream",
    "Client": ".client",
    "open_client": ".client",
    "APIConnectionError": ".errors",
    "APIError": ".errors",
    "APIStatusError": ".errors",
    "APIStreamError": ".errors",
    "APITimeoutError": ".errors",
    "AuthenticationError": ".errors",
    "BadRequestError": ".errors",
    "BudgetExceededError": ".errors",
    "ClientClosedError": ".errors",
    "ConfigurationError": ".errors",
    "ConnectionLostError": ".errors",
    "HolySheepError": ".errors",
    "LedgerError": ".errors",
    "LedgerUnavailableError": ".errors",
    "NotFoundError": ".errors",
    "OverloadedError": ".errors",
    "PendingQueueFullError": ".errors",
    "PermissionDeniedError": ".errors",
    "PreviousResponseNotFoundError": ".errors",
    "RateLimitError": ".errors",
    "ServerError": ".errors",
    "StreamInterruptedError": ".errors",
    "StreamProtocolError": ".errors",
    "Connected": ".health",
    "ConnectionLost": ".health",
    "FailedBack": ".health",
    "HealthConfig": ".health",
    "HealthEvent": ".health",
    "HealthMonitor": ".health",
    "HealthState": ".health",
    "HealthStatistics": ".health",
    "Reconnected": ".health",
    "Reconnecting": ".health",
    "open_health_monitor": ".health",
    "UnknownPriceError": ".errors",
    "Ledger": ".ledger",
    "ChatChunk": ".models",
    "Choice": ".models",
    "Completion": ".models",
    "CompletionTokensDetails": ".models",
    "Delta": ".models",
    "Message": ".models",
    "PromptTokensDetails": ".models",
    "ToolCall": ".models",
    "ToolCallDelta": ".models",
    "Usage": ".models",
    "Limits": ".pool",
    "ModelStatistics": ".pool",
    "Percentiles": ".pool",
    "PoolStatistics": ".pool",
    "RateLimit": ".pool",
    "ContentPart": ".responses",
    "ContentPartAdded": ".responses",
    "ContentPartDone": ".responses",
    "FunctionCall": ".responses",
    "FunctionCallArgumentsDelta": ".responses",
    "FunctionCallArgumentsDone": ".responses",
    "IncompleteDetails": ".responses",
    "InputTokensDetails": ".responses",
    "OutputItem": ".responses",
    "OutputItemAdded": ".responses",
    "OutputItemDone": ".responses",
    "OutputMessage": ".responses",
    "OutputRefusal": ".responses",
    "OutputText": ".responses",
    "OutputTextDelta": ".responses",
    "OutputTextDone": ".responses",
    "OutputTokensDetails": ".responses",
    "ReasoningItem": ".responses",
    "ReasoningSummaryPartAdded": ".responses",
    "ReasoningSummaryPartDone": ".responses",
    "ReasoningSummaryTextDelta": ".responses",
    "ReasoningSummaryTextDone": ".responses",
    "ReasoningText": ".responses",
    "ReasoningTextDelta": ".responses",
    "ReasoningTextDone": ".responses",
    "RefusalDelta": ".responses",
    "RefusalDone": ".responses",
    "Response": ".responses",
    "ResponseCompleted": ".responses",
    "ResponseCreated": ".responses",
    "ResponseError": ".responses",
    "ResponseErrorEvent": ".responses",
    "ResponseEvent": ".responses",
    "ResponseFailed": ".responses",
    "ResponseInProgress": ".responses",
    "ResponseIncomplete": ".responses",
    "ResponseQueued": ".responses",
    "ResponseUsage": ".responses",
    "UnknownContentPart": ".responses",
    "UnknownOutputItem": ".responses",
    "UnknownResponseEvent": ".responses",
    "DEFAULT_PRICES": ".prices",
    "ModelPrice": ".prices",
    "RetryPolicy": ".retry",
    "Session": ".session",
    "SessionStatistics": ".session",
    "CheapestWithinLatency": ".router",
    "RoutedCompletion": ".router",
    "Route": ".router",
    "Router": ".router",
    "RouterView": ".router",
    "RoutingPolicy": ".router",
    "SeedRules": ".router",
    "Task": ".router",
    "Timeouts": ".timeouts",
    "TransportStatistics": "._transport",
    "TrioTransport": "._transport",
}

__all__ = sorted(["__version__", *_LAZY])

#: Submodules reachable as attributes (``hs.otel``) but imported on first use, and left out of
#: ``__all__``: ``otel`` needs the optional ``opentelemetry-api`` (the ``otel`` extra).
_LAZY_SUBMODULES = frozenset({"otel"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'holysheep_trio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_LAZY_SUBMODULES})
