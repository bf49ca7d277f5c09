"""Loading models: hub ids, local diffusers folders, single-file checkpoints.

Local folders are checked cheaply (``model_index.json`` and the UNet/VAE
configs) before any weights are read, so size errors are reported before the
model loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .configs import DTYPES, folder_class, read_config
from .models.controlnet import CONTROLNET_CLASS, check_controlnet, load_controlnet, unet_family_label  # noqa: F401
from .errors import ModelError, SettingsError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def is_single_file(location: str) -> bool:
    return os.path.isfile(location) and location.lower().endswith(SINGLE_FILE_SUFFIXES)


def _families(families: Optional[Sequence[Any]]) -> Sequence[Any]:
    if families is not None:
        return families
    from .models import BUILTIN_FAMILIES

    return BUILTIN_FAMILIES


def inspect_folder(location: str, families: Optional[Sequence[Any]] = None) -> Optional[dict[str, Any]]:
    """For a local diffusers folder: its pipeline class, model family and
    native size, from configs only. ``None`` for a hub id. Raises
    :class:`ModelError` for a folder that no model family claims.

    ``families``: the registered :class:`~accdiffusion.models.ModelFamily`
    values in the order they are asked (``PluginHost.families()``; default:
    the core's ``sdxl`` and ``sd``). The claiming family's adapter reads the
    folder's configs (``folder_info``)."""
    path = Path(location)
    if not path.is_dir():
        if path.exists() and not is_single_file(location):
            raise ModelError(f"model {location!r} is a file but not a single-file checkpoint "
                             f"(allowed suffixes: {', '.join(SINGLE_FILE_SUFFIXES)})")
        return None
    index = path / "model_index.json"
    if not index.is_file() and folder_class(path) == CONTROLNET_CLASS:
        raise ModelError(f"model folder {location!r} holds a ControlNet ({CONTROLNET_CLASS}), not a pipeline: "
                         "pass it as --controlnet (controlnet=...) with --structure-guidance controlnet, "
                         "and a base model of its family as --model")
    if not index.is_file():
        raise ModelError(f"model folder {location!r} has no model_index.json: not a diffusers pipeline folder")
    info = read_config(path, "model_index.json", location)
    cls = info.get("_class_name")
    families = _families(families)
    family = next((f for f in families if cls in f.pipelines), None)
    if family is None:
        supported = ", ".join(dict.fromkeys(c for f in families for c in f.pipelines)) or "(no family registered)"
        raise ModelError(f"model folder {location!r} holds a {cls!r} (model_index.json, key '_class_name'); "
                         f"supported: {supported}")
    return {"class_name": cls, "family": family.name, **family.inspect(path, location)}


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
    families: Optional[Sequence[Any]] = None,
) -> Any:
    """Load a diffusers pipeline from a hub id, a local folder or a single file.

    Single-file checkpoints go through diffusers' ``from_single_file`` of
    each family's ``single_file`` class in turn (``families``, default the
    core's: SDXL first, then SD); ``single_file_config`` names a local diffusers
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
            readers = [getattr(diffusers, f.single_file) for f in _families(families)
                       if f.single_file and hasattr(diffusers, f.single_file)]
            for cls in readers:
                try:
                    kwargs = {"torch_dtype": torch_dtype}
                    if single_file_config:
                        kwargs["config"] = single_file_config
                    pipe = cls.from_single_file(location, **kwargs)
                    break
                except Exception as exc:  # noqa: BLE001 - try the next family, report all
                    last = exc
            else:
                names = " or ".join(f.title for f in _families(families) if f.single_file) or "any registered family"
                raise ModelError(f"cannot read single-file checkpoint {location!r} as {names}: {last}")
        else:
            inspect_folder(location, families)
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


# -- LoRA -----------------------------------------------------------------------------

#: Adapter names given to the LoRAs of ``Settings.lora``, in order.
LORA_ADAPTER_PREFIX = "accdiffusion_lora_"


def check_lora_locations(entries: Any) -> list[tuple[str, float]]:
    """``Settings.lora`` entries as ``(location, scale)``; a local-looking
    location (a file name with a suffix, or a path with a separator) that does
    not exist is a :class:`SettingsError` naming it."""
    from .settings import parse_lora

    out = []
    for entry in entries:
        location, scale = parse_lora(entry)
        local = os.path.expanduser(location)
        if os.path.exists(local):
            out.append((local, scale))
            continue
        hub_id = location.count("/") == 1 and not location.startswith((".", "/", "~")) and not location.lower(
            ).endswith((".safetensors", ".bin", ".pt", ".ckpt"))
        if not hub_id:
            raise SettingsError(f"lora={entry!r} is not allowed: {location!r} does not exist; allowed: a LoRA "
                                ".safetensors file, a folder holding one, or a hub id (owner/name), "
                                "optionally ':SCALE'")
        out.append((location, scale))
    return out


def apply_loras(pipeline: Any, entries: Any) -> list[dict[str, Any]]:
    """Load the LoRAs of ``Settings.lora`` into ``pipeline`` with diffusers'
    loader of its family (UNet and every text encoder the LoRA has weights
    for) and activate them with their scales. Returns ``[{"location",
    "scale", "adapter", "components"}]`` for the record. A file that is not a
    LoRA for this family raises :class:`ModelError` naming it; the LoRAs this
    call loaded are removed again first."""
    loras = check_lora_locations(entries)
    if not loras:
        return []
    if not hasattr(pipeline, "load_lora_weights"):
        raise ModelError(f"lora: a {type(pipeline).__name__} cannot load LoRA weights")
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise ModelError("lora needs the peft package: pip install 'accdiffusion-core[lora]' (or pip install peft)"
                         ) from exc
    before = _adapters(pipeline)
    stale = [n for n in before if n.startswith(LORA_ADAPTER_PREFIX)]
    if stale:
        pipeline.delete_adapters(stale)
    names: list[str] = []
    records = []
    name = ""
    try:
        for k, (location, scale) in enumerate(loras):
            name = f"{LORA_ADAPTER_PREFIX}{k}"
            have = _adapters(pipeline)
            try:
                pipeline.load_lora_weights(location, adapter_name=name)
            except Exception as exc:  # noqa: BLE001 - name the file
                raise ModelError(f"lora {location!r} cannot be loaded into this {type(pipeline).__name__}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
                                 f"allowed: a LoRA for the model's family ({_lora_family(pipeline)})"
                                 ) from None
            components = sorted(c for c, ns in pipeline.get_list_adapters().items() if name in ns)
            if name not in _adapters(pipeline) or not components or set(have) == set(_adapters(pipeline)):
                raise ModelError(f"lora {location!r} is not a LoRA for this model: none of its weights match "
                                 f"the {_lora_family(pipeline)} UNet or text encoders")
            names.append(name)
            records.append({"location": location, "scale": scale, "adapter": name, "components": components})
        pipeline.set_adapters(names, adapter_weights=[r["scale"] for r in records])
    except BaseException:
        if any(n.startswith(LORA_ADAPTER_PREFIX) for n in _adapters(pipeline)):
            pipeline.delete_adapters([n for n in _adapters(pipeline) if n.startswith(LORA_ADAPTER_PREFIX)])
        raise
    return records


def _adapters(pipeline: Any) -> list[str]:
    try:
        listed = pipeline.get_list_adapters()
    except Exception:  # noqa: BLE001 - no adapters loaded yet
        return []
    return sorted({n for ns in listed.values() for n in ns})


def _lora_family(pipeline: Any) -> str:
    """The family a LoRA must be trained for, in messages."""
    unet = getattr(pipeline, "unet", None)
    if unet is not None:
        return unet_family_label(dict(unet.config))
    return type(pipeline).__name__
