"""The border to the model layer: embedding texts, counting tokens, reading images, all
blocking (memory's work runs on worker threads; the async facade wraps it).

Any :class:`~erpoz.models.EmbedModel` embeds; one with a blocking ``embed_array`` (MiniLM)
is called directly, one with only the async ``embed`` is run to completion on a thread of its
own. OCR takes an :class:`~erpoz.models.OCRModel` (``read_sync`` when it has one) or a plain
callable from image bytes to text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from ..errors import ModelError
from ..models import Metered
from ..models import count_tokens as estimate_tokens
from ._errors import INSTALL_HINT, MemoryStoreError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors: TypeAlias = npt.NDArray[np.float32]

__all__ = [
    "default_embedder",
    "embed_texts",
    "estimate_tokens",
    "numpy",
    "ocr_text",
    "token_counter",
]

T = TypeVar("T")


def numpy() -> Any:
    """The numpy module, or a clear error when it is missing (it comes with ``erpoz[local]``)."""
    try:
        import numpy as np
    except ImportError:
        raise MemoryStoreError(f"vector memory needs numpy: {INSTALL_HINT}") from None
    return np


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from blocking code: here when no event loop runs in this
    thread, else on a short-lived thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def main() -> T:
            return await make()

        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        done: concurrent.futures.Future[T] = pool.submit(run_sync, make)
        return done.result()


def default_embedder() -> Any:
    """The local MiniLM (loaded on first use)."""
    from ..models.local_embed import MiniLMEmbed

    return MiniLMEmbed()


def model_name(model: object) -> str:
    return str(getattr(model, "name", type(model).__name__))


def embed_texts(model: Any, texts: Sequence[str]) -> Vectors:
    """Unit-length float32 vectors, one row per text (``(0, 0)`` for no texts)."""
    np = numpy()
    if not texts:
        empty: Vectors = np.empty((0, 0), dtype=np.float32)
        return empty
    fn = getattr(model, "embed_array", None)
    if callable(fn):
        vectors, _tokens = fn(list(texts))
        array = np.asarray(vectors, dtype=np.float32)
    else:
        result = run_sync(lambda: model.embed(list(texts)))
        array = np.asarray(result.vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != len(texts):
        raise ModelError(
            f"returned {array.shape[0] if array.ndim else 0} vectors for {len(texts)} texts",
            model=model_name(model),
        )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    array /= np.maximum(norms, 1e-12)
    out: Vectors = np.ascontiguousarray(array, dtype=np.float32)
    return out


def token_counter(model: object | None = None) -> Callable[[str], int]:
    """How ``model`` counts tokens: MiniLM's own tokenizer for a :class:`MiniLMEmbed` (it is
    loaded), a model's ``count_tokens`` method, the tokenizer a :class:`Metered` model was
    configured with; else erpoz's estimate (about four characters a token)."""
    if model is None:
        return estimate_tokens
    from ..models.local_embed import MiniLMEmbed, _on_torch_thread

    if isinstance(model, MiniLMEmbed):
        loaded = _on_torch_thread(model._model)
        tokenizer = loaded.model.tokenizer

        def minilm_tokens(text: str) -> int:
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            return max(1, len(ids)) if text else 0

        return minilm_tokens
    own = getattr(model, "count_tokens", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    if isinstance(model, Metered):
        return model._count
    return estimate_tokens


def ocr_text(ocr: Any, image: bytes) -> str:
    """The text ``ocr`` reads in ``image``, lines joined by line breaks."""
    read_sync = getattr(ocr, "read_sync", None)
    if callable(read_sync):
        result = read_sync(image)
    elif callable(getattr(ocr, "read", None)):
        result = run_sync(lambda: ocr.read(image))
    elif callable(ocr):
        result = ocr(image)
    else:
        raise TypeError(f"ocr must be an OCRModel or a callable, not {type(ocr).__name__}")
    text = getattr(result, "text", result)
    if not isinstance(text, str):
        raise TypeError(f"OCR gave {type(text).__name__}, not text")
    return text


def default_ocr() -> Any:
    """The local RapidOCR reader (loaded on first use)."""
    from ..models.local_ocr import RapidOCRReader

    return RapidOCRReader()
