"""Options that a plugin declares for its stage objects.

A stage class is a frozen attrs class whose fields are declared with
:func:`option`: a default, a type, bounds or choices and a one-line help.
From that declaration the core derives everything else:

* the command-line flags, one scheme for every plugin: ``--<name>-<field>``
  (the registered name and the field with ``_`` as ``-``, e.g.
  ``--cross-attention-threshold``), plus any *aliases* the option declares
  (``--c``), which set the option of whichever plugin of the stage is selected;
* ``--option NAME.FIELD=VALUE`` and ``plugin_options={"NAME.FIELD": value}``;
* validation before the model loads, with errors that name the plugin, the
  option, the value and what is allowed;
* the run record (``attrs.asdict`` of the stage object) and
  ``accdiffusion plugins --options``.

Values arrive typed (from Python) or as strings (from the command line and
JSON-lines batch files); :meth:`OptionSpec.parse` turns a string into the
option's type and :meth:`OptionSpec.check` says why a value is refused.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import attrs

from .errors import SettingsError

#: Key of an option's :class:`OptionSpec` in its attrs field's metadata.
METADATA_KEY = "accdiffusion.option"

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_TYPES = (bool, int, float, str)


@attrs.frozen
class OptionSpec:
    """What an option allows: its type, bounds or choices, whether ``None`` is
    allowed, its help text and the aliases it answers to."""

    type: type
    help: str
    aliases: tuple[str, ...] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: Optional[tuple[Any, ...]] = None
    optional: bool = False

    def allowed(self) -> str:
        """What the option allows, in words (used in every error message)."""
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.type is bool:
            text = "true or false"
        else:
            noun = {int: "an integer", float: "a number", str: "a string"}[self.type]
            bounds = []
            if self.minimum is not None:
                bounds.append(f"{'>' if self.min_exclusive else '>='} {self.minimum:g}")
            if self.maximum is not None:
                bounds.append(f"{'<' if self.max_exclusive else '<='} {self.maximum:g}")
            text = noun + (" " + " and ".join(bounds) if bounds else "")
            if self.type is str and self.minimum is None:
                text = "a non-empty string"
        return text + (" (or none)" if self.optional else "")

    def check(self, value: Any) -> Optional[str]:
        """``None`` if ``value`` is allowed, else the reason, in words."""
        if value is None:
            return None if self.optional else f"a value is required: {self.allowed()}"
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, str) and value.strip() != ""
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.minimum is not None:
            ok = value > self.minimum if self.min_exclusive else value >= self.minimum
        if ok and self.maximum is not None:
            ok = value < self.maximum if self.max_exclusive else value <= self.maximum
        return None if ok else self.allowed()

    def parse(self, value: Any) -> Any:
        """``value`` in the option's type: strings are converted (``"0.5"``,
        ``"true"``, ``"none"`` for an optional option); anything else is
        returned as given, for :meth:`check` to judge. Raises ``ValueError``
        for a string that is not of the type."""
        if not isinstance(value, str) or self.type is str and not (self.optional and value.lower() == "none"):
            if self.type is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            return value
        text = value.strip()
        if self.optional and text.lower() == "none":
            return None
        if self.type is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if self.type is int:
            return int(text)
        return float(text)


def option(default: Any, *, help: str, type: Optional[type] = None, minimum: Optional[float] = None,
           maximum: Optional[float] = None, min_exclusive: bool = False, max_exclusive: bool = False,
           choices: Optional[Sequence[Any]] = None, aliases: Sequence[str] = (), optional: bool = False) -> Any:
    """An attrs field for a stage option.

    ``type`` defaults to the type of ``default`` (``bool``, ``int``, ``float``
    or ``str``); ``minimum``/``maximum`` bound numbers (inclusive unless
    ``min_exclusive``/``max_exclusive``); ``choices`` lists the allowed values;
    ``optional`` allows ``None``; ``aliases`` are extra names (such as ``c``)
    that the command line and ``generate()`` accept for this option of
    whichever plugin of the stage is selected. A value outside the allowed
    ones raises :class:`~accdiffusion.errors.SettingsError` when the stage
    object is built.
    """
    kind = type if type is not None else (default.__class__ if default is not None else None)
    if kind not in _TYPES:
        raise TypeError(f"option type must be one of bool, int, float, str (got {kind!r}); pass type=")
    spec = OptionSpec(kind, help, tuple(aliases), minimum, maximum, min_exclusive, max_exclusive,
                      None if choices is None else tuple(choices), optional)
    reason = spec.check(default)
    if reason is not None:
        raise ValueError(f"the default {default!r} is not allowed by its own option: {reason}")

    def validate(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        why = spec.check(value)
        if why is not None:
            raise SettingsError(f"{attribute.name}={value!r} is not allowed: {why}")

    converter = (lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v) if kind is float else None
    return attrs.field(default=default, validator=validate, converter=converter, metadata={METADATA_KEY: spec},
                       kw_only=True)


@attrs.frozen
class DeclaredOption:
    """One option of an options class: its field name, default and :class:`OptionSpec`."""

    name: str
    default: Any
    spec: OptionSpec


def declared_options(cls: Any) -> tuple[DeclaredOption, ...]:
    """The options declared with :func:`option` on the attrs class ``cls``
    (empty for anything else), in field order."""
    if not (isinstance(cls, type) and attrs.has(cls)):
        return ()
    return tuple(DeclaredOption(f.name, f.default, f.metadata[METADATA_KEY])
                 for f in attrs.fields(cls) if METADATA_KEY in f.metadata)


def flag_name(plugin_name: str, field: str) -> str:
    """The command-line flag of option ``field`` of plugin ``plugin_name``:
    ``--<name>-<field>`` with ``_`` written ``-``."""
    return "--" + f"{plugin_name}-{field}".replace("_", "-")


def stage_values(stage_object: Any) -> dict[str, Any]:
    """The declared option values of a stage object (for the run record): of
    its own class, or else of its ``options`` attribute (a stage built by a
    factory from a separate options class keeps them there); empty otherwise."""
    source = stage_object
    if not declared_options(type(source)):
        source = getattr(stage_object, "options", None)
    return {o.name: getattr(source, o.name) for o in declared_options(type(source))}
