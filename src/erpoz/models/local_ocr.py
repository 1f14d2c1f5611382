"""Text in images, read locally with RapidOCR (PaddleOCR's models on ONNX Runtime) from weights
that ship in the wheel (``pip install 'erpoz[local]'``): nothing is downloaded.

The engine is built once per process on first use; each read runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ModelError
from ._guard import ensure_allowed
from ._types import ModelSpec, OCRLine, OCRResult

__all__ = ["RapidOCRReader", "create"]

INSTALL_HINT = "pip install 'erpoz[local]'"

_engine: Any = None  # rapidocr_onnxruntime.RapidOCR (untyped), built once per process
_engine_lock = threading.Lock()
_read_lock = threading.Lock()  # RapidOCR keeps per-call state on the engine: one read at a time


def _load_engine(model: str) -> Any:
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-untyped]
            except ImportError as exc:
                raise ModelError(
                    f"RapidOCR needs the optional local-model packages ({exc.name} is "
                    f"missing): {INSTALL_HINT}",
                    model=model,
                ) from exc
            _engine = RapidOCR()
        return _engine


def _decode(image: bytes, model: str) -> Any:
    """The image as a BGR pixel array (what RapidOCR reads), or ModelError saying why not."""
    try:
        import numpy as np
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ModelError(
            f"OCR needs the optional local-model packages ({exc.name} is missing): {INSTALL_HINT}",
            model=model,
        ) from exc
    if not isinstance(image, bytes | bytearray | memoryview):
        raise ModelError(f"OCR reads image bytes, not {type(image).__name__}", model=model)
    if not image:
        raise ModelError("cannot read an empty image (0 bytes)", model=model)
    head = bytes(image[:8])
    try:
        with Image.open(io.BytesIO(image)) as probe:
            probe.verify()  # checks the file's structure without decoding the pixels
        with Image.open(io.BytesIO(image)) as img:
            rgb = img.convert("RGB")
    except UnidentifiedImageError as exc:
        raise ModelError(
            f"these {len(image)} bytes are not an image Pillow can open (they start with "
            f"{head!r}); give PNG, JPEG, TIFF, BMP, GIF or WebP bytes",
            model=model,
        ) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ModelError(f"the image is damaged or unreadable: {exc}", model=model) from exc
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def _reading_order(found: Sequence[Any]) -> list[OCRLine]:
    """Lines top to bottom, and left to right within a row: boxes whose vertical centres are
    closer than half a typical line height share a row."""
    lines = [
        OCRLine(str(text).strip(), tuple((float(x), float(y)) for x, y in box), float(score))
        for box, text, score in found
    ]
    if not lines:
        return []

    def top(line: OCRLine) -> float:
        return min(y for _, y in line.box)

    def centre(line: OCRLine) -> float:
        ys = [y for _, y in line.box]
        return (min(ys) + max(ys)) / 2

    def left(line: OCRLine) -> float:
        return min(x for x, _ in line.box)

    height = statistics.median(max(y for _, y in ln.box) - top(ln) for ln in lines)
    rows: list[list[OCRLine]] = []
    for line in sorted(lines, key=centre):
        if rows and abs(centre(line) - centre(rows[-1][0])) < height / 2:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=left)]


class RapidOCRReader:
    """An :class:`~erpoz.models.OCRModel`: the lines of text in an image, each with its box
    (four corner points, in pixels) and the recogniser's score, in reading order."""

    def __init__(self, name: str = "rapidocr") -> None:
        self.name = name
        self._engine: Any = None

    def _ocr(self) -> Any:
        if self._engine is None:
            ensure_allowed(self.name, "load RapidOCR weights")
            self._engine = _load_engine(self.name)
        return self._engine

    async def load(self) -> None:
        """Build the engine now (at start-up, say) instead of on the first ``read``."""
        await asyncio.to_thread(self._ocr)

    def read_sync(self, image: bytes) -> OCRResult:
        """Blocking :meth:`read`, for code already on a worker thread."""
        t0 = time.perf_counter()
        pixels = _decode(image, self.name)
        engine = self._ocr()
        try:
            with _read_lock:
                found, _elapsed = engine(pixels)
        except Exception as exc:  # onnxruntime / OpenCV failures, translated at the border
            raise ModelError(f"OCR failed: {type(exc).__name__}: {exc}", model=self.name) from exc
        return OCRResult(tuple(_reading_order(found or ())), self.name, time.perf_counter() - t0)

    async def read(self, image: bytes) -> OCRResult:
        return await asyncio.to_thread(self.read_sync, image)


def create(spec: ModelSpec) -> RapidOCRReader:
    """Provider ``rapidocr``."""
    return RapidOCRReader(spec.name)
