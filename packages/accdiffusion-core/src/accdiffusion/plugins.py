"""Plugin manager and stage registry.

A :class:`PluginHost` is built fresh for every use (there is no module-level
plugin state): it creates a :class:`pluggy.PluginManager`, loads the
``accdiffusion`` entry points (unless told not to), registers any plugin
objects given, and collects the stage factories and named models they register.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError
from .stages import PROTOCOLS, STAGES

ENTRY_POINT_GROUP = "accdiffusion"
#: Comma-separated distribution-independent plugin names (entry-point names) to
#: load; when set, other entry points are skipped.
ALLOW_ENV = "ACCDIFFUSION_PLUGINS"

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)

#: Reserved global-guidance name that switches the global path off.
NO_GLOBAL_GUIDANCE = "none"


@attrs.frozen
class Registration:
    """One registered name: its factory (or model location) and where it came from."""

    name: str
    target: Any
    description: str = ""
    plugin: str = ""
    defaults: dict = attrs.field(factory=dict)


class Registry:
    """Names registered for each stage, and named models."""

    def __init__(self) -> None:
        self._stages: dict[str, dict[str, Registration]] = {stage: {} for stage in STAGES}
        self._models: dict[str, Registration] = {}

    def registrar(self, stage: str, plugin: str) -> Callable[..., None]:
        """The ``register`` callable handed to one plugin's hook for ``stage``."""
        table = self._stages[stage] if stage != "model" else self._models

        def register(name: str, target: Any, description: str = "", defaults: Optional[dict] = None) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin!r} registered a {stage} with an invalid name {name!r}")
            if defaults is not None and stage != "model":
                raise PluginError(f"plugin {plugin!r}: only models take defaults, not {stage} {name!r}")
            if defaults:
                from .settings import Settings

                fields = {f.name for f in attrs.fields(Settings)} - {"prompt"}
                unknown = sorted(set(defaults) - fields)
                if unknown:
                    raise PluginError(f"plugin {plugin!r}: model {name!r} has defaults for unknown settings {unknown}")
            if stage == "global_guidance" and name == NO_GLOBAL_GUIDANCE:
                raise PluginError(f"plugin {plugin!r}: the global_guidance name 'none' is reserved")
            if stage != "model" and not callable(target):
                raise PluginError(f"plugin {plugin!r} registered {stage} {name!r} with a non-callable factory")
            if name in table:
                other = table[name].plugin
                raise PluginError(f"{stage} {name!r} is registered twice: by {other!r} and by {plugin!r}")
            table[name] = Registration(name, target, description, plugin, dict(defaults or {}))

        return register

    def names(self, stage: str) -> list[str]:
        """Registered names for ``stage`` (plus ``none`` for the global path), sorted."""
        names = sorted(self._stages[stage])
        if stage == "global_guidance":
            names.append(NO_GLOBAL_GUIDANCE)
        return names

    def get(self, stage: str, name: str) -> Registration:
        if stage not in self._stages:
            raise PluginError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        try:
            return self._stages[stage][name]
        except KeyError:
            installed = ", ".join(self.names(stage)) or "(none installed)"
            raise PluginError(f"unknown {stage} {name!r}; installed: {installed}") from None

    def registrations(self, stage: str) -> list[Registration]:
        return [self._stages[stage][n] for n in sorted(self._stages[stage])]

    @property
    def models(self) -> dict[str, Registration]:
        return dict(self._models)


_STAGE_HOOKS = {
    "prompt_decomposer": "accdiffusion_register_prompt_decomposers",
    "tiler": "accdiffusion_register_tilers",
    "global_guidance": "accdiffusion_register_global_guidances",
    "upscaler": "accdiffusion_register_upscalers",
    "schedule": "accdiffusion_register_schedules",
    "structure_guidance": "accdiffusion_register_structure_guidances",
    "model": "accdiffusion_register_models",
}


class PluginHost:
    """A fresh plugin manager plus the registry its plugins filled.

    ``entry_points=False`` loads no installed plugin (useful in tests and for
    fully programmatic composition); ``plugins`` are extra plugin objects
    (modules or instances with ``@hookimpl`` methods), registered after the
    entry points so their ``accdiffusion_adapt_pipeline`` answers first.
    """

    def __init__(self, plugins: Iterable[Any] = (), *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        from . import adapters  # built-in model adapters, registered like any plugin

        self.pm.register(adapters, name="accdiffusion.adapters")
        from . import schedules  # built-in schedules (paper, fast), registered like any plugin

        self.pm.register(schedules, name="accdiffusion.schedules")
        from . import structure  # built-in structure guidances (none, controlnet)

        self.pm.register(structure, name="accdiffusion.structure")
        if entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self.pm.register(plugin)
        self.pm.check_pending()
        self.registry = Registry()
        for stage, hook_name in _STAGE_HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                impl.function(self.registry.registrar(stage, impl.plugin_name))

    def _load_entry_points(self) -> None:
        allow = os.environ.get(ALLOW_ENV)
        if allow is None:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            return
        from importlib.metadata import entry_points

        wanted = {n.strip() for n in allow.split(",") if n.strip()}
        found = list(entry_points(group=ENTRY_POINT_GROUP))
        unknown = sorted(wanted - {ep.name for ep in found})
        if unknown:
            installed = ", ".join(sorted({ep.name for ep in found})) or "(none)"
            raise PluginError(f"{ALLOW_ENV}={allow!r} names plugins that are not installed: {', '.join(unknown)}; "
                              f"installed entry points ({ENTRY_POINT_GROUP!r}): {installed}")
        for ep in found:
            if ep.name in wanted and self.pm.get_plugin(ep.name) is None:
                self.pm.register(ep.load(), name=ep.name)

    def create(self, stage: str, name_or_object: Any, settings: Any) -> Any:
        """The stage object for ``name_or_object``: a registered name is built
        with its factory; any other object is checked against the stage's
        protocol and used as given. Returns ``None`` for global guidance ``none``."""
        if stage not in PROTOCOLS:
            raise PluginError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        if isinstance(name_or_object, str):
            if stage == "global_guidance" and name_or_object == NO_GLOBAL_GUIDANCE:
                return None
            reg = self.registry.get(stage, name_or_object)
            obj = reg.target(settings)
            source = f"{stage} {name_or_object!r} from plugin {reg.plugin!r}"
        else:
            obj = name_or_object
            source = f"{stage} object {type(obj).__name__}"
        if obj is None and stage == "global_guidance":
            return None
        if not isinstance(obj, PROTOCOLS[stage]):
            raise PluginError(f"{source} does not implement {PROTOCOLS[stage].__name__}")
        return obj

    def adapt(self, pipeline: Any, settings: Any) -> Any:
        """The model adapter that claims ``pipeline``."""
        adapter = self.pm.hook.accdiffusion_adapt_pipeline(pipeline=pipeline, settings=settings)
        if adapter is None:
            raise PluginError(
                f"no model adapter handles a {type(pipeline).__name__}; built in: "
                "StableDiffusionXLPipeline, StableDiffusionPipeline (SD 1.5 / 2.1)"
            )
        return adapter

    def model_location(self, name: str) -> Optional[str]:
        """The location registered under ``name``, or ``None``."""
        reg = self.registry.models.get(name)
        return None if reg is None else str(reg.target)

    def model_defaults(self, name: Optional[str]) -> dict:
        """Settings the model registered under ``name`` recommends (empty if none or unregistered)."""
        reg = self.registry.models.get(name) if name is not None else None
        return {} if reg is None else dict(reg.defaults)
