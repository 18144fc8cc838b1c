"""The registered scorer kinds, found by discovery: every module of `edge.scorers` that
defines a `Scorer` subclass with a `kind` of its own (a shared base without one is no kind).
A new kind is a new module; nothing else names it.

`SCORERS` maps kind -> Scorer class; `AnyScorerSpec` is the discriminated union of their
specs (on `kind`), the type of the manifest's `scorers`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union, get_args

from pydantic import Field

import edge.scorers as package
from edge.scorers.base import Scorer
from edge.scorers.spec import ScorerSpec

_INFRASTRUCTURE = frozenset({"base", "registry", "spec", "steps"})
T = TypeVar("T")


def kinds_in(package_name: str, paths: Iterable[str], base: type[T],
             infrastructure: frozenset[str]) -> list[type[T]]:
    """The subclasses of `base` with a `kind` of their own defined in the modules of a
    package (its infrastructure modules and `_private` ones left out), by module name."""
    found: list[type[T]] = []
    for info in sorted(pkgutil.iter_modules(paths), key=lambda i: i.name):
        if info.name in infrastructure or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package_name}.{info.name}")
        found += [value for value in vars(module).values()
                  if isinstance(value, type) and issubclass(value, base) and value is not base
                  and value.__module__ == module.__name__ and "kind" in vars(value)]
    return found


def _discover() -> dict[str, type[Scorer]]:
    found: dict[str, type[Scorer]] = {}
    for cls in kinds_in(package.__name__, package.__path__, Scorer, _INFRASTRUCTURE):
        literal = get_args(cls.spec_type.model_fields["kind"].annotation)
        if literal != (cls.kind,):
            raise TypeError(f"{cls.__qualname__}: kind {cls.kind!r} but its spec's kind "
                            f"is Literal{list(literal)}")
        if cls.kind in found:
            raise TypeError(f"scorer kind {cls.kind!r} registered twice")
        found[cls.kind] = cls
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
