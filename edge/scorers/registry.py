"""The registered scorer kinds, found by discovery: every module of `edge.scorers` that
defines a `Scorer` subclass with a `kind` of its own (a shared base without one is no kind).
A new kind is a new module; nothing else names it.

`SCORERS` maps kind -> Scorer class; `AnyScorerSpec` is the discriminated union of their
specs (on `kind`), the type of the manifest's `scorers`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args

from pydantic import Field

import edge.scorers as package
from edge.scorers.base import Scorer
from edge.scorers.spec import ScorerSpec

_INFRASTRUCTURE = frozenset({"base", "registry", "spec", "steps"})


def _discover() -> dict[str, type[Scorer]]:
    found: dict[str, type[Scorer]] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in _INFRASTRUCTURE or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Scorer) and value is not Scorer
                    and value.__module__ == module.__name__ and "kind" in vars(value)):
                kind = value.kind
                literal = get_args(value.spec_type.model_fields["kind"].annotation)
                if literal != (kind,):
                    raise TypeError(f"{value.__qualname__}: kind {kind!r} but its spec's kind "
                                    f"is Literal{list(literal)}")
                if kind in found:
                    raise TypeError(f"scorer kind {kind!r} registered twice")
                found[kind] = value
    return found


SCORERS: dict[str, type[Scorer]] = _discover()

if TYPE_CHECKING:
    AnyScorerSpec = ScorerSpec
else:
    AnyScorerSpec = Annotated[Union[tuple(s.spec_type for s in SCORERS.values())],  # noqa: UP007
                              Field(discriminator="kind")]


def scorer_class(spec: ScorerSpec) -> type[Scorer]:
    return SCORERS[spec.kind]


def build(spec: ScorerSpec, manifest: Any) -> Scorer:
    """The device-side scorer of `spec` in a bundle with `manifest`."""
    return scorer_class(spec)(spec, manifest)
