"""Hook specifications: the contract between the core and its plugins.

Plugins implement these with :data:`hookimpl` (also ``accdiffusion.hookimpl``)
and are found through the ``accdiffusion`` entry-point group; most plugins
write one registration list instead (:class:`accdiffusion.StagePlugin`), which
implements the registration hooks for them. The default AccDiffusion stages are
plugins registered exactly like third-party ones.

Registration hooks run once when a plugin manager is built; they add named
*targets* to the run's registry. A target is, preferably, a stage class that
is a frozen attrs class whose fields are options declared with
:func:`accdiffusion.options.option` (the class is its own options class:
built with the run's option values); or a factory ``factory(settings)``, or,
with ``options=`` naming an options class, ``factory(settings, options)``.
Stage objects are described in :mod:`accdiffusion.stages`. Hooks are grouped by when they matter:

* model loading: :func:`accdiffusion_register_models`, :func:`accdiffusion_register_model_families`,
  :func:`accdiffusion_adapt_pipeline`
* stage registration: one hook per stage.
"""

from __future__ import annotations

from typing import Any, Optional

import pluggy

PROJECT = "accdiffusion"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a plugin's implementation of one of the hooks below.
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- model loading -----------------------------------------------------------


@hookspec
def accdiffusion_register_models(register) -> None:
    """Register named models.

    Call ``register(name, location, description="", defaults=None)`` where
    ``location`` is a hub id, a local diffusers folder or a single-file
    checkpoint, and ``defaults`` maps :class:`accdiffusion.Settings` fields to
    the values this model recommends (e.g. ``{"steps": 20}``); settings the
    user gives explicitly win. ``accdiffusion generate --model NAME`` then
    loads ``location``; the model named ``shapes`` is the default when
    installed.
    """


@hookspec
def accdiffusion_register_model_families(register) -> None:
    """Register model families: ``register(family)`` with an
    :class:`accdiffusion.models.ModelFamily` (a name, a
    :class:`accdiffusion.models.ModelAdapter` subclass, the diffusers pipeline
    class names it claims, optionally the pipeline class of its single-file
    checkpoints).

    A local model folder is accepted when a family claims its
    ``model_index.json`` class (its configs are read by the adapter's
    ``folder_info`` before weights load); a loaded pipeline is adapted by the
    family that claims it. Families registered later are asked first, so a
    plugin can replace a built-in family (``sdxl``, ``sd``).
    """


@hookspec(firstresult=True)
def accdiffusion_adapt_pipeline(pipeline: Any, settings: Any) -> Optional[Any]:
    """Claim a loaded diffusers pipeline by returning a model adapter.

    Return an :class:`accdiffusion.models.ModelAdapter` for ``pipeline``, or
    ``None`` to let the next plugin try. Asked before the registered model
    families (:func:`accdiffusion_register_model_families`), so it can
    override any of them for one pipeline; the first non-``None`` answer
    wins, plugins registered later are asked first.
    """


# -- stage registration ------------------------------------------------------


@hookspec
def accdiffusion_register_prompt_decomposers(register) -> None:
    """Register prompt decomposers: ``register(name, target, description="", options=None)``.

    ``target`` builds a :class:`accdiffusion.stages.PromptDecomposer` (see
    :meth:`accdiffusion.plugins.Registration.build`).
    """


@hookspec
def accdiffusion_register_tilers(register) -> None:
    """Register local-window tilers: ``register(name, target, description="", options=None)``.

    ``target`` builds a :class:`accdiffusion.stages.Tiler` (see
    :meth:`accdiffusion.plugins.Registration.build`).
    """


@hookspec
def accdiffusion_register_global_guidances(register) -> None:
    """Register global-path strategies: ``register(name, target, description="", options=None)``.

    ``target`` builds a :class:`accdiffusion.stages.GlobalGuidance` (see
    :meth:`accdiffusion.plugins.Registration.build`).
    The name ``none`` is reserved: it switches the global path off.
    """


@hookspec
def accdiffusion_register_upscalers(register) -> None:
    """Register latent upscalers: ``register(name, target, description="", options=None)``.

    ``target`` builds a :class:`accdiffusion.stages.Upscaler` (see
    :meth:`accdiffusion.plugins.Registration.build`).
    """


@hookspec
def accdiffusion_register_schedules(register) -> None:
    """Register schedules: ``register(name, target, description="", options=None)``.

    ``target`` builds a :class:`accdiffusion.stages.Schedule` (see
    :meth:`accdiffusion.plugins.Registration.build`).
    """


@hookspec
def accdiffusion_register_structure_guidances(register) -> None:
    """Register structure guidances: ``register(name, target, description="", options=None)``.

    ``target`` builds a :class:`accdiffusion.stages.StructureGuidance` (see
    :meth:`accdiffusion.plugins.Registration.build`).
    The core registers ``none`` (default) and ``controlnet``.
    """
