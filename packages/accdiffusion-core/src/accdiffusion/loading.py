"""Loading models: hub ids, local diffusers folders, single-file checkpoints.

Local folders are checked cheaply (``model_index.json`` and the UNet/VAE
configs) before any weights are read, so size errors are reported before the
model loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
SUPPORTED_CLASSES = ("StableDiffusionXLPipeline", "StableDiffusionPipeline")


def is_single_file(location: str) -> bool:
    return os.path.isfile(location) and location.lower().endswith(SINGLE_FILE_SUFFIXES)


def inspect_folder(location: str) -> Optional[dict[str, Any]]:
    """For a local diffusers folder: its pipeline class and native size, from
    configs only. ``None`` for a hub id. Raises :class:`ModelError` for a
    folder that is not a supported pipeline."""
    path = Path(location)
    if not path.is_dir():
        if path.exists() and not is_single_file(location):
            raise ModelError(f"model {location!r} is a file but not a single-file checkpoint "
                             f"(allowed suffixes: {', '.join(SINGLE_FILE_SUFFIXES)})")
        return None
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(f"model folder {location!r} has no model_index.json: not a diffusers pipeline folder")
    try:
        info = json.loads(index.read_text())
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model folder {location!r} is incomplete or unreadable: {exc}") from exc
    cls = info.get("_class_name")
    if cls not in SUPPORTED_CLASSES:
        raise ModelError(f"model folder {location!r} holds a {cls!r}; supported: {', '.join(SUPPORTED_CLASSES)}")
    vae_factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return {"class_name": cls, "native_size": int(unet["sample_size"]) * vae_factor, "vae_scale_factor": vae_factor}


def resolve_device(device: str) -> str:
    """``"auto"``: CUDA when available, else Apple's MPS when available, else the CPU."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def load_pipeline(
    location: str,
    dtype: str = "float32",
    device: str = "cpu",
    *,
    offload: str = "none",
    single_file_config: Optional[str] = None,
) -> Any:
    """Load a diffusers pipeline from a hub id, a local folder or a single file.

    Single-file checkpoints go through diffusers' ``from_single_file`` (SDXL
    is tried first, then SD); ``single_file_config`` names a local diffusers
    folder or hub id whose configs describe the checkpoint's architecture.
    ``offload`` is ``"none"``, ``"model"`` (whole components move to ``device``
    when used) or ``"sequential"`` (layer by layer; slowest, least memory);
    both need the ``accelerate`` package.
    """
    import diffusers

    torch_dtype = DTYPES[dtype]
    device = resolve_device(device)
    try:
        if is_single_file(location):
            last: Optional[Exception] = None
            for cls in (diffusers.StableDiffusionXLPipeline, diffusers.StableDiffusionPipeline):
                try:
                    kwargs = {"torch_dtype": torch_dtype}
                    if single_file_config:
                        kwargs["config"] = single_file_config
                    pipe = cls.from_single_file(location, **kwargs)
                    break
                except Exception as exc:  # noqa: BLE001 - try the next family, report all
                    last = exc
            else:
                raise ModelError(f"cannot read single-file checkpoint {location!r} as SDXL or SD: {last}")
        else:
            inspect_folder(location)
            pipe = diffusers.DiffusionPipeline.from_pretrained(location, torch_dtype=torch_dtype)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - wrap loader errors with the location
        raise ModelError(f"cannot load model {location!r}: {exc}") from exc
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    if offload == "none":
        return pipe.to(device)
    try:
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
    except ImportError as exc:
        raise ModelError(f"offload={offload!r} needs the accelerate package: pip install accelerate ({exc})") from exc
    return pipe
