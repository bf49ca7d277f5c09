"""A plugin as one registration list: :class:`StageEntry` lines in a :class:`StagePlugin`.

This module sits below the plugin host (:mod:`accdiffusion.plugins`), so that
the core's own registration list (:mod:`accdiffusion.builtins`) and every
plugin package can build their lists without importing the host.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import attrs

from .errors import PluginError
from .hookspecs import hookimpl
from .stages import STAGES

#: What a registration line may register besides the stages: a named model
#: (``"model"``) and a model family (``"model_family"``, a
#: :class:`accdiffusion.models.ModelFamily` as the target).
OTHER_KINDS = ("model", "model_family")

__all__ = ["OTHER_KINDS", "StageEntry", "StagePlugin"]


@attrs.frozen
class StageEntry:
    """One line of a plugin's registration list: ``stage`` (one of
    :data:`accdiffusion.stages.STAGES`, ``"model"`` or ``"model_family"``),
    the ``name`` users select, the ``target`` (a stage class declaring its
    options, a factory, for a model its location, for a model family a
    :class:`accdiffusion.models.ModelFamily`), a one-line ``description``, an
    ``options`` class for a factory, and a model's recommended ``defaults``."""

    stage: str
    name: str
    target: Any
    description: str = ""
    options: Optional[type] = None
    defaults: Optional[dict] = None


class StagePlugin:
    """A plugin made from one registration list of :class:`StageEntry` lines.

    It implements every registration hook, each registering the lines of its
    stage, so a plugin package needs only the list and an entry point naming
    the ``StagePlugin`` object::

        plugin = StagePlugin([StageEntry("tiler", "grid", GridTiler, "a plain grid")])
    """

    def __init__(self, entries: Sequence[StageEntry], name: Optional[str] = None) -> None:
        #: the name the plugin manager knows it by when it is not loaded from an entry point
        self.plugin_name = name
        for entry in entries:
            if not isinstance(entry, StageEntry):
                raise PluginError(f"a registration list holds StageEntry lines, not {entry!r}")
            if entry.stage not in STAGES and entry.stage not in OTHER_KINDS:
                raise PluginError(f"StageEntry {entry.name!r}: unknown stage {entry.stage!r}; stages are "
                                  f"{', '.join(STAGES)}, model and model_family")
            if entry.stage == "model_family" and getattr(entry.target, "name", None) != entry.name:
                raise PluginError(f"StageEntry {entry.name!r}: a model_family line's target must be a "
                                  f"ModelFamily called {entry.name!r}, not {entry.target!r}")
        self.entries = tuple(entries)

    def __repr__(self) -> str:
        return f"StagePlugin({', '.join(f'{e.stage}:{e.name}' for e in self.entries)})"

    def register_stage(self, stage: str, register: Callable[..., None]) -> None:
        """Register this list's lines of ``stage`` with ``register``."""
        for e in self.entries:
            if e.stage != stage:
                continue
            if stage == "model":
                register(e.name, e.target, e.description, defaults=e.defaults)
            elif stage == "model_family":
                register(e.target)
            else:
                register(e.name, e.target, e.description, options=e.options)

    @hookimpl
    def accdiffusion_register_models(self, register: Callable[..., None]) -> None:
        self.register_stage("model", register)

    @hookimpl
    def accdiffusion_register_model_families(self, register: Callable[..., None]) -> None:
        self.register_stage("model_family", register)

    @hookimpl
    def accdiffusion_register_prompt_decomposers(self, register: Callable[..., None]) -> None:
        self.register_stage("prompt_decomposer", register)

    @hookimpl
    def accdiffusion_register_tilers(self, register: Callable[..., None]) -> None:
        self.register_stage("tiler", register)

    @hookimpl
    def accdiffusion_register_global_guidances(self, register: Callable[..., None]) -> None:
        self.register_stage("global_guidance", register)

    @hookimpl
    def accdiffusion_register_upscalers(self, register: Callable[..., None]) -> None:
        self.register_stage("upscaler", register)

    @hookimpl
    def accdiffusion_register_schedules(self, register: Callable[..., None]) -> None:
        self.register_stage("schedule", register)

    @hookimpl
    def accdiffusion_register_structure_guidances(self, register: Callable[..., None]) -> None:
        self.register_stage("structure_guidance", register)
