"""Plugin manager, stage registry, and the options plugins declare.

A :class:`PluginHost` is built fresh for every use (there is no module-level
plugin state): it creates a :class:`pluggy.PluginManager`, loads the
``accdiffusion`` entry points (unless told not to), registers any plugin
objects given, and collects the stage targets and named models they register.
A plugin usually is one :class:`StagePlugin`: a registration list of
:class:`StageEntry` lines. The host also resolves the run's plugin options
(``Settings.plugin_options``: ``NAME.FIELD`` keys and declared aliases such as
``c``) against the selected plugins' declared options (:mod:`accdiffusion.options`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping, Optional

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError, SettingsError
from .hookspecs import hookimpl
from .registration import StageEntry, StagePlugin
from .options import DeclaredOption, declared_options, flag_name
from .stages import PROTOCOLS, STAGES

ENTRY_POINT_GROUP = "accdiffusion"
#: Comma-separated distribution-independent plugin names (entry-point names) to
#: load; when set, other entry points are skipped.
ALLOW_ENV = "ACCDIFFUSION_PLUGINS"

__all__ = ["ALLOW_ENV", "ENTRY_POINT_GROUP", "NO_GLOBAL_GUIDANCE", "PluginHost", "Registration", "Registry",
           "StageEntry", "StagePlugin", "hookimpl"]

#: Reserved global-guidance name that switches the global path off.
NO_GLOBAL_GUIDANCE = "none"


@attrs.frozen
class Registration:
    """One registered name: its target (or model location), where it came from
    and, for a stage, its options class.

    ``options`` is the attrs class whose :func:`~accdiffusion.options.option`
    fields are the stage's options: the target itself when the target is such
    a class, else the class given with ``register(..., options=)``, else ``None``.
    ``plugin`` is the plugin's name in the plugin manager (its entry-point
    name), ``distribution`` the installed distribution it came from.
    """

    name: str
    target: Any
    description: str = ""
    plugin: str = ""
    defaults: dict = attrs.field(factory=dict)
    options: Optional[type] = None
    distribution: str = ""
    stage: str = ""

    @property
    def declared(self) -> tuple[DeclaredOption, ...]:
        """The stage's declared options (empty when it declares none)."""
        return declared_options(self.options)

    def option(self, field: str) -> Optional[DeclaredOption]:
        """The declared option named ``field``, or ``None``."""
        return next((o for o in self.declared if o.name == field), None)

    def source(self) -> str:
        """``plugin 'x' (distribution 'y')``, for messages."""
        dist = f" (distribution {self.distribution!r})" if self.distribution and self.distribution != self.plugin else ""
        return f"plugin {self.plugin!r}{dist}"

    def make_options(self, values: Mapping[str, Any]) -> Any:
        """``options(**values)``: the checks of the options class itself (across
        options, files it reads) as a :class:`SettingsError` naming this stage."""
        try:
            return self.options(**values)
        except SettingsError as exc:
            field, _, rest = str(exc).partition("=")
            raise SettingsError(f"option {self.name}.{field}={rest} (the {self.stage} {self.name!r} from "
                                f"{self.source()})") from None

    def build(self, settings: Any, values: Mapping[str, Any]) -> Any:
        """The stage object for a run: ``options(**values)`` when the target is
        its own options class; ``target(settings, options(**values))`` with a
        separate options class; ``target(settings)`` without options."""
        if self.options is None:
            return self.target(settings)
        opts = self.make_options(values)
        return opts if self.options is self.target else self.target(settings, opts)


class Registry:
    """Names registered for each stage, and named models."""

    def __init__(self) -> None:
        self._stages: dict[str, dict[str, Registration]] = {stage: {} for stage in STAGES}
        self._models: dict[str, Registration] = {}
        self._families: dict[str, Registration] = {}

    def family_registrar(self, plugin: str, distribution: str = "") -> Callable[..., None]:
        """The ``register(family)`` callable handed to one plugin's model-family hook."""
        from .models.base import ModelFamily

        def register(family: Any) -> None:
            if not isinstance(family, ModelFamily):
                raise PluginError(f"plugin {plugin!r} registered a model family that is not an "
                                  f"accdiffusion.models.ModelFamily: {family!r}")
            reg = Registration(family.name, family, family.description, plugin, {}, None, distribution or plugin,
                               "model_family")
            if family.name in self._families:
                first, second = sorted((self._families[family.name].source(), reg.source()))
                raise PluginError(f"model family {family.name!r} is registered twice: by {first} and by {second}; "
                                  "uninstall one of the two distributions")
            self._families[family.name] = reg

        return register

    def families(self) -> list[Any]:
        """The registered :class:`~accdiffusion.models.ModelFamily` values, latest registered first."""
        return [reg.target for reg in reversed(list(self._families.values()))]

    def family_registrations(self) -> list[Registration]:
        return [self._families[n] for n in sorted(self._families)]

    def registrar(self, stage: str, plugin: str, distribution: str = "") -> Callable[..., None]:
        """The ``register`` callable handed to one plugin's hook for ``stage``."""
        table = self._stages[stage] if stage != "model" else self._models

        def register(name: str, target: Any, description: str = "", defaults: Optional[dict] = None,
                     options: Optional[type] = None) -> None:
            if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
                raise PluginError(f"plugin {plugin!r} registered a {stage} with an invalid name {name!r} "
                                  "(letters, digits, '_' and '-')")
            if defaults is not None and stage != "model":
                raise PluginError(f"plugin {plugin!r}: only models take defaults, not {stage} {name!r}")
            if options is not None and stage == "model":
                raise PluginError(f"plugin {plugin!r}: model {name!r} cannot declare options")
            if defaults:
                from .settings import Settings

                fields = {f.name for f in attrs.fields(Settings)} - {"prompt"}
                unknown = sorted(set(defaults) - fields)
                if unknown:
                    raise PluginError(f"plugin {plugin!r}: model {name!r} has defaults for unknown settings {unknown}")
            if stage == "global_guidance" and name == NO_GLOBAL_GUIDANCE:
                raise PluginError(f"plugin {plugin!r}: the global_guidance name 'none' is reserved")
            if stage != "model" and not callable(target):
                raise PluginError(f"plugin {plugin!r} registered {stage} {name!r} with a non-callable target")
            if options is not None and not declared_options(options):
                raise PluginError(f"plugin {plugin!r}: options of {stage} {name!r} must be an attrs class with "
                                  f"fields declared by accdiffusion.options.option, not {options!r}")
            if options is None and stage != "model" and isinstance(target, type) and attrs.has(target):
                options = target  # a stage class is its own options class (possibly with no options)
            reg = Registration(name, target, description, plugin, dict(defaults or {}), options,
                               distribution or plugin, stage)
            if name in table:
                other = table[name]
                first, second = sorted((other.source(), reg.source()))
                raise PluginError(f"{stage} {name!r} is registered twice: by {first} and by {second}; "
                                  "uninstall one of the two distributions")
            table[name] = reg

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

    def all_stages(self) -> list[Registration]:
        """Every stage registration, stage by stage in :data:`STAGES` order."""
        return [reg for stage in STAGES for reg in self.registrations(stage)]

    def named(self, name: str) -> list[Registration]:
        """The stage registrations called ``name`` (one per stage at most)."""
        return [t[name] for t in self._stages.values() if name in t]

    def aliases(self) -> dict[str, list[tuple[Registration, DeclaredOption]]]:
        """Every declared alias and the options (of which registrations) it names."""
        out: dict[str, list[tuple[Registration, DeclaredOption]]] = {}
        for reg in self.all_stages():
            for opt in reg.declared:
                for alias in opt.spec.aliases:
                    out.setdefault(alias, []).append((reg, opt))
        return out

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
        from .builtins import BUILTINS  # built-in model families and stages: one list

        self.pm.register(BUILTINS, name="accdiffusion.builtins")
        self._entry_distributions: dict[str, str] = {}
        if entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self.pm.register(plugin, name=getattr(plugin, "plugin_name", None)
                             if isinstance(plugin, StagePlugin) else None)
        self.pm.check_pending()
        distributions = {self.pm.get_name(plugin): _distribution_name(dist)
                         for plugin, dist in self.pm.list_plugin_distinfo()}
        distributions.update(self._entry_distributions)
        distributions["accdiffusion.builtins"] = "accdiffusion-core"
        self.registry = Registry()
        for impl in self.pm.hook.accdiffusion_register_model_families.get_hookimpls():
            impl.function(self.registry.family_registrar(impl.plugin_name, distributions.get(impl.plugin_name, "")))
        for stage, hook_name in _STAGE_HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                impl.function(self.registry.registrar(stage, impl.plugin_name,
                                                      distributions.get(impl.plugin_name, "")))
        self._check_aliases()

    def _check_aliases(self) -> None:
        """Refuse aliases that clash with a core setting or name options of different types."""
        from .settings import Settings

        core = {f.name for f in attrs.fields(Settings)}
        for alias, targets in self.registry.aliases().items():
            reg, opt = targets[0]
            if alias in core or alias.replace("-", "_") in core:
                raise PluginError(f"{reg.source()}: option {reg.name}.{opt.name} declares the alias {alias!r}, "
                                  "which is a core setting")
            kinds = {o.spec.type for _, o in targets}
            if len(kinds) > 1:
                named = ", ".join(f"{r.name}.{o.name} ({o.spec.type.__name__}, {r.source()})" for r, o in targets)
                raise PluginError(f"the alias {alias!r} names options of different types: {named}")

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
                if ep.dist is not None:
                    self._entry_distributions[ep.name] = ep.dist.name

    def create(self, stage: str, name_or_object: Any, settings: Any) -> Any:
        """The stage object for ``name_or_object``: a registered name is built
        from its registration with the run's values of its declared options
        (:meth:`options_for`); any other object is checked against the stage's
        protocol and used as given. Returns ``None`` for global guidance ``none``."""
        if stage not in PROTOCOLS:
            raise PluginError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        if isinstance(name_or_object, str):
            if stage == "global_guidance" and name_or_object == NO_GLOBAL_GUIDANCE:
                return None
            reg = self.registry.get(stage, name_or_object)
            obj = reg.build(settings, self.options_for(stage, name_or_object, settings))
            source = f"{stage} {name_or_object!r} from {reg.source()}"
        else:
            obj = name_or_object
            source = f"{stage} object {type(obj).__name__}"
        if obj is None and stage == "global_guidance":
            return None
        if not isinstance(obj, PROTOCOLS[stage]):
            from .stages import missing_members

            raise PluginError(f"{source} does not implement {PROTOCOLS[stage].__name__} "
                              f"(missing: {', '.join(missing_members(obj, stage))})")
        return obj

    # -- plugin options ---------------------------------------------------------

    def _option_targets(self, key: str, value: Any) -> list[tuple[Registration, DeclaredOption]]:
        """What the option ``key`` names: ``NAME.FIELD`` one option of the stage
        called ``NAME``; an alias every option that declares it. Raises
        :class:`SettingsError` for a key that names nothing installed."""
        if "." in key:
            name, _, field = key.partition(".")
            regs = self.registry.named(name)
            if not regs:
                names = sorted({r.name for r in self.registry.all_stages() if r.declared})
                raise SettingsError(f"option {key}={value!r}: no installed plugin registers a stage called "
                                    f"{name!r}; stages with options: {', '.join(names) or '(none)'}")
            found = [(r, r.option(field)) for r in regs if r.option(field) is not None]
            if not found:
                reg = regs[0]
                fields = ", ".join(o.name for o in reg.declared) or "(it declares none)"
                raise SettingsError(f"option {key}={value!r}: the {reg.stage} {name!r} from {reg.source()} "
                                    f"has no option {field!r}; its options: {fields}")
            return found
        targets = self.registry.aliases().get(key)
        if not targets:
            known = sorted(set(self.registry.aliases()) | {f"{r.name}.{o.name}" for r in self.registry.all_stages()
                                                             for o in r.declared})
            raise SettingsError(f"unknown plugin option {key!r}={value!r}; options are NAME.FIELD "
                                f"(`accdiffusion plugins --options`): {', '.join(known) or '(none installed)'}")
        return targets

    def options_for(self, stage: str, name: str, settings: Any) -> dict[str, Any]:
        """The values of the declared options of ``stage`` ``name`` that
        ``settings.plugin_options`` sets (``NAME.FIELD`` keys and aliases),
        parsed into each option's type and checked. Raises
        :class:`SettingsError` naming the plugin, the option, the value and
        what is allowed; an option set twice (by its key and an alias) is refused."""
        reg = self.registry.get(stage, name)
        values: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, raw in dict(getattr(settings, "plugin_options", {}) or {}).items():
            for target, opt in self._option_targets(key, raw):
                if target is not reg:
                    continue
                if opt.name in given:
                    raise SettingsError(f"option {reg.name}.{opt.name} is given twice, as {given[opt.name]!r} and "
                                        f"as {key!r}; give it once")
                given[opt.name] = key
                values[opt.name] = _parsed(reg, opt, key, raw)
        return values

    def check_options(self, settings: Any, selected: Mapping[str, Any]) -> None:
        """Every entry of ``settings.plugin_options`` checked against the run's
        stages ``selected`` (stage -> registered name, or a stage object): it
        must name an installed plugin's option (or alias), that plugin must be
        selected, and its value must be allowed. Raises :class:`SettingsError`."""
        chosen = {stage: self.registry.get(stage, name) for stage, name in selected.items()
                  if isinstance(name, str) and not (stage == "global_guidance" and name == NO_GLOBAL_GUIDANCE)}
        for key, raw in dict(getattr(settings, "plugin_options", {}) or {}).items():
            targets = self._option_targets(key, raw)
            live = [(r, o) for r, o in targets if chosen.get(r.stage) is r]
            if not live:
                reg = targets[0][0]
                for_whom = " or ".join(sorted({f"the {r.stage} {r.name!r}" for r, _ in targets}))
                current = selected.get(reg.stage)
                current = current if isinstance(current, str) else f"a {type(current).__name__} object"
                raise SettingsError(f"option {key}={raw!r} is for {for_whom}, which is not selected (this run's "
                                    f"{reg.stage} is {current!r}); select it with "
                                    f"--{reg.stage.replace('_', '-')} {reg.name} or drop the option")
            for reg, opt in live:
                _parsed(reg, opt, key, raw)
        for stage, reg in chosen.items():
            values = self.options_for(stage, reg.name, settings)
            if reg.options is not None:
                reg.make_options(values)  # the options class's own checks, before any model loads

    def families(self) -> list[Any]:
        """The registered model families, latest registered first (the order they are asked in)."""
        return self.registry.families()

    def family_of(self, pipeline: Any) -> Optional[Any]:
        """The model family that claims ``pipeline``, or ``None``."""
        return next((f for f in self.families() if f.claims(pipeline)), None)

    def adapt(self, pipeline: Any, settings: Any) -> Any:
        """The model adapter for ``pipeline``: a plugin's ``accdiffusion_adapt_pipeline``
        answer, else the adapter of the first model family that claims it."""
        adapter = self.pm.hook.accdiffusion_adapt_pipeline(pipeline=pipeline, settings=settings)
        if adapter is not None:
            return adapter
        family = self.family_of(pipeline)
        if family is None:
            listing = "; ".join(f"{f.name}: {', '.join(f.pipelines)}" for f in self.families()) or "(none)"
            raise PluginError(f"no model family handles a {type(pipeline).__name__}; registered families: {listing}")
        return family.adapt(pipeline)

    def model_location(self, name: str) -> Optional[str]:
        """The location registered under ``name``, or ``None``."""
        reg = self.registry.models.get(name)
        return None if reg is None else str(reg.target)

    def model_defaults(self, name: Optional[str]) -> dict:
        """Settings the model registered under ``name`` recommends (empty if none or unregistered)."""
        reg = self.registry.models.get(name) if name is not None else None
        return {} if reg is None else dict(reg.defaults)


def _distribution_name(dist: Any) -> str:
    """The project name of a pluggy ``DistFacade``."""
    for attr in ("project_name", "name"):
        value = getattr(dist, attr, None)
        if value:
            return str(value)
    return str(dist.metadata["Name"])


def _parsed(reg: Registration, opt: DeclaredOption, key: str, raw: Any) -> Any:
    """``raw`` parsed into the option's type and checked; a :class:`SettingsError`
    names the plugin, the option, the value and what is allowed."""
    label = f"option {reg.name}.{opt.name}" + (f" (given as {key!r})" if key != f"{reg.name}.{opt.name}" else "")
    where = f"the {reg.stage} {reg.name!r} from {reg.source()}"
    try:
        value = opt.spec.parse(raw)
    except ValueError:
        raise SettingsError(f"{label}={raw!r} of {where} is not allowed: {opt.spec.allowed()}") from None
    reason = opt.spec.check(value)
    if reason is not None:
        raise SettingsError(f"{label}={raw!r} of {where} is not allowed: {reason}")
    return value


def option_flags(registry: Registry) -> list[tuple[str, str, list[tuple[Registration, DeclaredOption]]]]:
    """The command-line flags derived from the declared options: ``(flag, key,
    targets)`` with ``key`` the ``plugin_options`` key the flag sets
    (``NAME.FIELD`` for ``--name-field``, the alias for an alias flag)."""
    out = []
    seen = set()
    for reg in registry.all_stages():
        for opt in reg.declared:
            flag = flag_name(reg.name, opt.name)
            seen.add(flag)
            out.append((flag, f"{reg.name}.{opt.name}", [(reg, opt)]))
    for alias, targets in sorted(registry.aliases().items()):
        flag = "--" + alias.replace("_", "-")
        if flag not in seen:
            seen.add(flag)
            out.append((flag, alias, targets))
    return out
