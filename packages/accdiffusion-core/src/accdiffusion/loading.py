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

from .errors import ModelError, SettingsError

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
    info = _read_config(path, "model_index.json", location)
    cls = info.get("_class_name")
    if cls not in SUPPORTED_CLASSES:
        raise ModelError(f"model folder {location!r} holds a {cls!r} (model_index.json, key '_class_name'); "
                         f"supported: {', '.join(SUPPORTED_CLASSES)}")
    unet = _read_config(path, "unet/config.json", location)
    vae = _read_config(path, "vae/config.json", location)
    sample_size = unet.get("sample_size")
    if not (isinstance(sample_size, int) and not isinstance(sample_size, bool) and sample_size > 0):
        raise ModelError(f"model folder {location!r}: unet/config.json key 'sample_size' is "
                         f"{'missing' if 'sample_size' not in unet else repr(sample_size)}; "
                         "expected a positive integer")
    channels = vae.get("block_out_channels")
    if not (isinstance(channels, list) and channels
            and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)):
        raise ModelError(f"model folder {location!r}: vae/config.json key 'block_out_channels' is "
                         f"{'missing' if 'block_out_channels' not in vae else repr(channels)}; "
                         "expected a non-empty list of positive integers")
    vae_factor = 2 ** (len(channels) - 1)
    return {"class_name": cls, "native_size": sample_size * vae_factor, "vae_scale_factor": vae_factor}


def _read_config(folder: Path, name: str, location: str) -> dict[str, Any]:
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


def available_devices() -> list[str]:
    """The torch devices this machine can run on: ``cpu``, then ``cuda:N``, ``mps``."""
    out = ["cpu"]
    try:
        if torch.cuda.is_available():
            out += [f"cuda:{k}" for k in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken driver means no CUDA
        pass
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device: Any) -> str:
    """The device ``device`` names, resolved (``auto``) and checked to exist on
    this machine; :class:`SettingsError` naming the value and the available
    devices otherwise. Runs before any model loads."""
    if device == "auto":
        return resolve_device(device)
    available = available_devices()
    listing = ", ".join(["auto", *available])
    if not isinstance(device, str) or not device.strip():
        raise SettingsError(f"device={device!r} is not allowed: a device name; available here: {listing}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SettingsError(f"device={device!r} is not a torch device name; available here: {listing}") from None
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise SettingsError(f"device={device!r} does not exist: the CPU is device 'cpu'; available here: {listing}")
        return device
    if dev.type == "cuda":
        cuda = [d for d in available if d.startswith("cuda:")]
        if not cuda:
            raise SettingsError(f"device={device!r} is not available: this machine (or this torch build) has no "
                                f"CUDA device; available here: {listing}")
        if dev.index is not None and dev.index >= len(cuda):
            raise SettingsError(f"device={device!r} does not exist: {len(cuda)} CUDA device(s), "
                                f"cuda:0 to cuda:{len(cuda) - 1}; available here: {listing}")
        return device
    if dev.type == "mps":
        if "mps" not in available or dev.index not in (None, 0):
            raise SettingsError(f"device={device!r} is not available on this machine; available here: {listing}")
        return device
    backend = getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    try:
        ok = bool(is_available()) if callable(is_available) else False
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise SettingsError(f"device={device!r} is not available on this machine; available here: {listing}")
    return device


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
    device = check_device(device)
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
