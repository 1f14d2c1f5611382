"""Find a flow by what a user types: a YAML file, ``module:attr`` or ``path/to/file.py:attr``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..errors import FlowError
from ._flow import Flow
from ._yaml import import_object, load_yaml_flow

#: Modules imported from a ``file.py:attr`` flow are named with this prefix (they are not on
#: any import path, so a remote executor must ship their code by value).
LOADED_PREFIX = "_erpoz_flow_"


def load_flow(ref: str) -> Flow:
    """Load the flow named by ``ref``; its ``source`` is set so runs can be resumed from the CLI."""
    path_part, _, attr = ref.rpartition(":") if ":" in ref else (ref, "", "")
    if ref.endswith((".yaml", ".yml")):
        return load_yaml_flow(ref)
    if path_part.endswith(".py"):
        path = Path(path_part).resolve()
        if not path.exists():
            raise FlowError(f"no such file: {path_part}")
        name = f"{LOADED_PREFIX}{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise FlowError(f"cannot import {path_part}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise FlowError(
                f"importing {path_part} failed: {type(exc).__name__}: {exc}", file=path_part
            ) from exc
        finally:
            sys.path.remove(str(path.parent))
        if not hasattr(module, attr):
            raise FlowError(f"has no attribute '{attr}'", file=path_part)
        obj = getattr(module, attr)
        source = f"{path}:{attr}"
    elif attr:
        try:
            obj = import_object(ref, base=Path.cwd(), what="flow")
        except ValueError as exc:
            raise FlowError(str(exc)) from None
        source = ref
    else:
        raise FlowError(
            f"cannot find a flow in {ref!r}: give a .yaml file, 'package.module:name' "
            "or 'file.py:name'"
        )
    if not isinstance(obj, Flow):
        raise FlowError(f"{ref!r} is {type(obj).__name__}, not an erpoz Flow")
    obj.source = obj.source or source
    return obj
