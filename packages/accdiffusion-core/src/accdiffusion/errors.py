"""Errors raised for bad input, before any model work starts."""

from __future__ import annotations


class AccDiffusionError(Exception):
    """Base class of the errors this package raises on purpose."""


class SettingsError(AccDiffusionError, ValueError):
    """A setting has a value that is not allowed; the message names both."""


class PluginError(AccDiffusionError, LookupError):
    """A stage name is unknown or a plugin breaks the hook contract."""


class ModelError(AccDiffusionError):
    """A model location cannot be loaded as a supported pipeline."""


class ResourceError(AccDiffusionError):
    """A run ran out of memory; the message names the phase, the size and what to lower."""


class DistributedError(AccDiffusionError):
    """A run of several processes failed together: a collective failed or timed
    out (another process died or stopped answering), or the group could not form."""
