"""Steps: plain functions with annotated inputs and output, plus how to run them."""

from __future__ import annotations

import hashlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, overload

from pydantic import ValidationError

from ..errors import FlowError
from ._context import Context

P = ParamSpec("P")
R = TypeVar("R")


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again may help: the error's own ``retryable`` when it has one (erpoz's
    errors all do: a model error says so per call; budgets, guard blocks, policy denials,
    definition and configuration errors never are); a validation error never is; anything
    else is."""
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    return not isinstance(exc, ValidationError)


_CATCH_ALL = (BaseException, Exception)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing step is tried again.

    ``attempts`` counts the first try; delays grow ``backoff * multiplier**n`` up to
    ``max_backoff``. An exception is retried when it is an instance of ``retry_on`` and not of
    ``give_up_on``, and either trying again may help (:func:`is_retryable`) or ``retry_on``
    names its class (or a base of it) explicitly, rather than through ``Exception``: so
    ``retry_on=(ModelError,)`` retries even model errors that say they are not retryable.
    """

    attempts: int = 1
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 30.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise FlowError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.multiplier < 1 or self.max_backoff < 0:
            raise FlowError("RetryPolicy needs backoff >= 0, multiplier >= 1, max_backoff >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1)))

    def retries(self, exc: BaseException) -> bool:
        if not isinstance(exc, self.retry_on) or isinstance(exc, self.give_up_on):
            return False
        if is_retryable(exc):
            return True
        return any(isinstance(exc, c) for c in self.retry_on if c not in _CATCH_ALL)


NO_RETRY = RetryPolicy()

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(value: int | float | str) -> int:
    """Bytes from ``2147483648``, ``"2GiB"``, ``"512 MB"``."""
    if isinstance(value, bool):
        raise FlowError(f"a size is a number of bytes or like '2GiB', got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    m = _SIZE.match(str(value))
    if not m:
        raise FlowError(f"a size is a number of bytes or like '2GiB' / '512MB', got {value!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


@dataclass(frozen=True, slots=True)
class Resources:
    """What one execution of a step needs from the executor that runs it: on Ray, a node with
    this many CPUs, GPUs and bytes of memory free (and any custom resources by name). The local
    thread executor runs every step in this process and does not reserve anything."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None
    custom: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0 or (self.memory is not None and self.memory < 0):
            raise FlowError(f"resources cannot be negative: {self}")
        if any(amount < 0 for _, amount in self.custom):
            raise FlowError(f"custom resources cannot be negative: {dict(self.custom)}")

    @classmethod
    def of(cls, value: Resources | Mapping[str, object]) -> Resources:
        """From a ``Resources`` or a mapping like ``{"cpus": 2, "gpus": 1, "memory": "4GiB"}``
        (other keys are custom resources: ``{"accelerator_tpu": 1}``)."""
        if isinstance(value, Resources):
            return value
        if not isinstance(value, Mapping):
            raise FlowError(
                f"resources are a mapping like {{cpus: 2, gpus: 1, memory: 4GiB}}, got {value!r}"
            )
        known: dict[str, object] = dict(value)
        custom: list[tuple[str, float]] = []
        for key in [k for k in known if k not in ("cpus", "gpus", "memory")]:
            amount = known.pop(key)
            if not isinstance(amount, int | float) or isinstance(amount, bool):
                raise FlowError(f"resource {key!r} must be a number, got {amount!r}")
            custom.append((str(key), float(amount)))
        try:
            cpus = float(known.get("cpus", 1.0))  # type: ignore[arg-type]
            gpus = float(known.get("gpus", 0.0))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise FlowError(f"cpus and gpus are numbers, got {dict(value)!r}") from None
        memory = known.get("memory")
        return cls(
            cpus=cpus,
            gpus=gpus,
            memory=None if memory is None else parse_size(memory),  # type: ignore[arg-type]
            custom=tuple(sorted(custom)),
        )

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU", f"{self.gpus:g} GPU"]
        if self.memory is not None:
            parts.append(f"{self.memory / 2**30:.1f} GiB memory")
        parts += [f"{amount:g} {name}" for name, amount in self.custom]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: Any
    has_default: bool
    default: Any = None


@dataclass(frozen=True, slots=True)
class StepSpec:
    """Everything erpoz knows about a step function, computed once when it is declared."""

    fn: Callable[..., Any]
    name: str
    ref: str
    params: tuple[Param, ...]
    returns: Any
    is_async: bool
    context_param: str | None
    version: str
    retry: RetryPolicy = NO_RETRY
    timeout: float | None = None
    cache: bool = False
    review: bool = False
    inline: bool = False
    resources: Resources | None = None
    param_map: dict[str, Param] = field(default_factory=dict, compare=False)


def _code_version(fn: Callable[..., Any]) -> str:
    """A hash of the function's code that is the same in every process (nested code objects,
    such as comprehensions and lambdas, are hashed by content, not by their repr)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return "0"
    h = hashlib.sha256()
    _hash_code(code, h)
    return h.hexdigest()[:12]


def _hash_code(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, h)
        else:
            h.update(repr(const).encode())
    h.update(repr(code.co_names).encode())


def make_spec(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    version: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    cache: bool = False,
    review: bool = False,
    inline: bool = False,
    resources: Resources | Mapping[str, object] | None = None,
) -> StepSpec:
    """Introspect ``fn`` once: its typed parameters, return type and whether it is async."""
    if not callable(fn):
        raise FlowError(f"a step must be a function, got {fn!r}")
    qual = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    try:
        hints = typing.get_type_hints(fn, include_extras=False)
    except Exception as exc:  # NameError for an annotation that does not resolve
        raise FlowError(f"cannot resolve the type annotations of {qual}: {exc}") from exc
    sig = inspect.signature(fn)
    params: list[Param] = []
    ctx_param: str | None = None
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise FlowError(f"{qual}: *args / **kwargs are not supported; name each input")
        if p.name not in hints:
            raise FlowError(
                f"{qual}: parameter '{p.name}' has no type annotation; erpoz checks wiring by type"
            )
        if hints[p.name] is Context:
            ctx_param = p.name
            continue
        params.append(
            Param(
                p.name,
                hints[p.name],
                p.default is not p.empty,
                None if p.default is p.empty else p.default,
            )
        )
    if "return" not in hints:
        raise FlowError(f"{qual}: missing return type annotation (use '-> None' for none)")
    if timeout is not None and timeout <= 0:
        raise FlowError(f"{qual}: timeout must be > 0 seconds, got {timeout}")
    is_async = inspect.iscoroutinefunction(fn)
    if inline and is_async:
        raise FlowError(f"{qual}: inline=True is for sync steps; async steps already run inline")
    ptuple = tuple(params)
    return StepSpec(
        fn=fn,
        name=name or str(getattr(fn, "__name__", qual)),
        ref=f"{getattr(fn, '__module__', '?')}:{qual}",
        params=ptuple,
        returns=hints["return"],
        is_async=is_async,
        context_param=ctx_param,
        version=version or _code_version(fn),
        retry=retry or NO_RETRY,
        timeout=timeout,
        cache=cache,
        review=review,
        inline=inline,
        resources=None if resources is None else Resources.of(resources),
        param_map={p.name: p for p in ptuple},
    )


@overload
def step(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    version: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    cache: bool = False,
    review: bool = False,
    inline: bool = False,
    resources: Resources | Mapping[str, object] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def step(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Declare a function as a step, optionally with how it runs.

    The function stays a plain function (callable and testable as before); erpoz reads its
    annotations once here. ``version`` keys the output cache (default: a hash of the code);
    ``review=True`` makes a human approve each output; ``inline=True`` runs a *cheap* sync step
    on the event loop instead of a worker thread; ``resources`` (``Resources`` or
    ``{"cpus": 2, "gpus": 1, "memory": "4GiB"}``) is what the step needs on a distributed
    executor (Ray), which then runs it where that is free. Every step has a stable
    ``ctx.idempotency_key`` for deduplicating side effects that a retry or resume repeats.
    """

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        f.__erpoz_step__ = make_spec(f, **options)  # type: ignore[attr-defined]
        return f

    return decorate(fn) if fn is not None else decorate


def spec_of(fn: Callable[..., Any]) -> StepSpec:
    """The spec of a decorated step, or a default one for a plain annotated function."""
    spec = getattr(fn, "__erpoz_step__", None)
    return spec if isinstance(spec, StepSpec) else make_spec(fn)
