"""The ``instance`` prompt decomposer, as a registration list."""

from __future__ import annotations

from accdiffusion.plugins import StageEntry, StagePlugin

from .decomposer import InstanceDecomposer

plugin = StagePlugin([
    StageEntry("prompt_decomposer", "instance", InstanceDecomposer,
               "patch prompts per object instance: an object's words only for the window(s) holding most of it"),
])
