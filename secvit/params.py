"""Reading ``params.yaml``: profile sections into typed, validated dataclasses.

Every stage reads its settings from ``params.yaml`` (the DVC params file). A
section maps onto a dataclass field by field; an unknown (e.g. misspelled) key,
a missing key or a value of the wrong type is a one-line :class:`SecvitError`
naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from secvit.errors import SecvitError

#: The profiles of params.yaml: ``smoke`` (CPU, generated data) and ``paper`` (the full study).
PROFILES = ("smoke", "paper")
T = TypeVar("T")


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else a one-line :class:`SecvitError`."""
    if profile not in PROFILES:
        raise SecvitError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    return profile


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The whole params file (YAML anchors and merge keys resolved)."""
    path = Path(path)
    if not path.is_file():
        raise SecvitError(f"params file {path} not found; run from the repository root or pass --params")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SecvitError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise SecvitError(f"{path} must be a YAML mapping")
    return data


def section(params: dict[str, Any], dotted: str, source: str = "params.yaml") -> Any:
    """``params['a']['b']`` for ``dotted='a.b'``, with an error naming the missing key."""
    node: Any = params
    for i, key in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or key not in node:
            have = ", ".join(node) if isinstance(node, dict) else "nothing"
            parent = ".".join(dotted.split(".")[:i]) or "the top level"
            raise SecvitError(f"{source} has no '{dotted}' ({parent} has: {have})")
        node = node[key]
    return node


def profile_section(params: dict[str, Any], profile: str, name: str, source: str = "params.yaml") -> Any:
    check_profile(profile)
    if profile not in params:
        known = ", ".join(p for p in params if p in PROFILES) or "none"
        raise SecvitError(f"{source} has no profile {profile!r} (it defines: {known})")
    return section(params, f"{profile}.{name}", source)


def _check_type(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_check_type(v, typing.get_args(annotation)[0]) for v in value)
    if origin is dict:
        key_t, val_t = typing.get_args(annotation)
        return isinstance(value, dict) and all(_check_type(k, key_t) and _check_type(v, val_t) for k, v in value.items())
    return isinstance(value, annotation)


def from_section(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from a params mapping, rejecting unknown, missing and mistyped keys."""
    if not isinstance(data, dict):
        raise SecvitError(f"{where} must be a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SecvitError(f"unknown setting '{where}.{unknown[0]}'; valid settings: {', '.join(fields)}")
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SecvitError(f"missing setting '{where}.{name}'")
            continue
        value = data[name]
        if not _check_type(value, hints[name]):
            expected = getattr(hints[name], "__name__", str(hints[name]))
            raise SecvitError(f"setting '{where}.{name}' must be {expected}, got {value!r}")
        kwargs[name] = float(value) if hints[name] is float else value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check:
        check(where)
    return obj


def load_section(params: str | Path | dict[str, Any], profile: str, name: str, cls: type[T]) -> T:
    """``cls`` built from ``<profile>.<name>`` of a params file (or of its contents, already loaded)."""
    data = params if isinstance(params, dict) else load_params(params)
    return from_section(cls, profile_section(data, profile, name), f"{profile}.{name}")
