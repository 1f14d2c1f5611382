"""Models behind four small protocols (chat, embed, OCR, classify), a registry of configured
models with prices and limits, and ``ctx.models``: every call metered, budgeted and recorded."""

from ._config import (
    ExecutorConfig,
    ProjectConfig,
    build_hub,
    load_config,
    load_hub,
    parse_config,
    project_hub,
)
from ._guard import block_real_providers, ensure_allowed
from ._hub import ModelHub, Models
from ._limits import RateGate, RateLimit
from ._meter import (
    Budget,
    Metered,
    Recorder,
    bind,
    count_tokens,
    current_recorder,
    record,
    spent_in_store,
    unbind,
)
from ._plugins import create, providers
from ._protocol import ChatModel, Classifier, EmbedModel, OCRModel
from ._types import (
    ChatRequest,
    ChatResult,
    ClassifyResult,
    EmbedResult,
    ImagePart,
    Message,
    ModelSpec,
    OCRLine,
    OCRResult,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "Budget",
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "Classifier",
    "ClassifyResult",
    "EmbedModel",
    "EmbedResult",
    "ExecutorConfig",
    "ImagePart",
    "Message",
    "Metered",
    "ModelHub",
    "ModelSpec",
    "Models",
    "OCRLine",
    "OCRModel",
    "OCRResult",
    "ProjectConfig",
    "RateGate",
    "RateLimit",
    "Recorder",
    "StreamChunk",
    "TextPart",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "bind",
    "block_real_providers",
    "build_hub",
    "count_tokens",
    "create",
    "current_recorder",
    "ensure_allowed",
    "load_config",
    "load_hub",
    "parse_config",
    "project_hub",
    "providers",
    "record",
    "spent_in_store",
    "unbind",
]
