"""Model folders read from their JSON configs, before any weights load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def read_config(folder: Path, name: str, location: str) -> dict[str, Any]:
    """``folder/name`` parsed as a JSON object, or :class:`ModelError` naming the file."""
    try:
        text = (folder / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"model folder {location!r} is incomplete or unreadable: {name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"model folder {location!r} is incomplete or unreadable: cannot read {name}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"model folder {location!r}: {name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model folder {location!r}: {name} must hold a JSON object, "
                         f"not a {type(data).__name__}")
    return data


def folder_class(path: Path) -> Optional[str]:
    """The ``_class_name`` of ``path/config.json``, or ``None``."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("_class_name") if isinstance(data, dict) else None


def positive_int(value: Any) -> bool:
    """An ``int`` (not a ``bool``) above 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def vae_scale_factor(folder: Path, location: str) -> int:
    """The VAE's downsampling factor from ``vae/config.json`` (``2 ** (levels - 1)``),
    or :class:`ModelError` naming the file and key."""
    vae = read_config(folder, "vae/config.json", location)
    channels = vae.get("block_out_channels")
    if not (isinstance(channels, list) and channels and all(positive_int(c) for c in channels)):
        raise ModelError(f"model folder {location!r}: vae/config.json key 'block_out_channels' is "
                         f"{'missing' if 'block_out_channels' not in vae else repr(channels)}; "
                         "expected a non-empty list of positive integers")
    return 2 ** (len(channels) - 1)
