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
    if not index.is_file() and _folder_class(path) == CONTROLNET_CLASS:
        raise ModelError(f"model folder {location!r} holds a ControlNet ({CONTROLNET_CLASS}), not a pipeline: "
                         "pass it as --controlnet (controlnet=...) with --structure-guidance controlnet, "
                         "and a base model of its family as --model")
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


# -- ControlNets -------------------------------------------------------------------

CONTROLNET_CLASS = "ControlNetModel"


def _folder_class(path: Path) -> Optional[str]:
    """The ``_class_name`` of ``path/config.json``, or ``None``."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("_class_name") if isinstance(data, dict) else None


def _family(config: dict[str, Any]) -> str:
    return "SDXL" if config.get("addition_embed_type") == "text_time" else "SD 1.x/2.x"


def check_controlnet(config: dict[str, Any], unet_config: dict[str, Any], vae_scale_factor: int,
                     location: str) -> None:
    """:class:`ModelError` naming ``location`` when the ControlNet ``config``
    does not fit the base UNet: another family (``addition_embed_type``),
    another text width (``cross_attention_dim``), other latent or block
    channels (``in_channels``, ``block_out_channels``), or a control image
    embedding that does not downsample by the VAE's factor."""
    what = f"ControlNet {location!r}"
    checks = (("addition_embed_type", "family"), ("cross_attention_dim", "text embedding width"),
              ("in_channels", "latent channels"), ("block_out_channels", "block channels"),
              ("projection_class_embeddings_input_dim", "SDXL added-conditioning width"))
    for key, meaning in checks:
        a, b = config.get(key), unet_config.get(key)
        if isinstance(a, tuple):
            a = list(a)
        if isinstance(b, tuple):
            b = list(b)
        if a != b:
            raise ModelError(f"{what} does not fit the model: its {meaning} ({key}={a!r}, a {_family(config)} "
                             f"ControlNet) differs from the model's UNet ({key}={b!r}, {_family(unet_config)}); "
                             "allowed: a ControlNet trained for this base model's family")
    channels = config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)
    factor = 2 ** (len(channels) - 1)
    if factor != vae_scale_factor:
        raise ModelError(f"{what} does not fit the model: its control-image embedding downsamples by {factor} "
                         f"(conditioning_embedding_out_channels={list(channels)!r}), the model's VAE by "
                         f"{vae_scale_factor}; allowed: a ControlNet whose embedding matches the VAE factor")


def load_controlnet(location: str, dtype: Any = torch.float32, device: Any = "cpu", *, unet: Any = None,
                    vae_scale_factor: Optional[int] = None) -> Any:
    """A diffusers ``ControlNetModel`` from a local folder or a hub id, in
    ``dtype`` on ``device``. A local folder's ``config.json`` is read and, when
    ``unet`` is given, checked against it (:func:`check_controlnet`) before
    the weights load; :class:`ModelError` naming the location otherwise."""
    import diffusers

    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    path = Path(location)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"ControlNet {location!r} is a file; allowed: a diffusers ControlNetModel folder "
                             "(config.json and its weights) or a hub id")
        config = _read_config(path, "config.json", location)
        if config.get("_class_name") != CONTROLNET_CLASS:
            raise ModelError(f"ControlNet {location!r} holds a {config.get('_class_name')!r} (config.json, key "
                             f"'_class_name'); allowed: a diffusers {CONTROLNET_CLASS} folder")
        if unet is not None:
            check_controlnet(config, dict(unet.config), vae_scale_factor or 8, location)
    try:
        model = diffusers.ControlNetModel.from_pretrained(location, torch_dtype=torch_dtype)
    except Exception as exc:  # noqa: BLE001 - wrap loader errors with the location
        raise ModelError(f"cannot load ControlNet {location!r}: {exc}") from exc
    if unet is not None and not path.exists():
        check_controlnet(dict(model.config), dict(unet.config), vae_scale_factor or 8, location)
    return model.to(device).eval()


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
                                 f"allowed: a LoRA for the model's family ({_family(dict(pipeline.unet.config))})"
                                 ) from None
            components = sorted(c for c, ns in pipeline.get_list_adapters().items() if name in ns)
            if name not in _adapters(pipeline) or not components or set(have) == set(_adapters(pipeline)):
                raise ModelError(f"lora {location!r} is not a LoRA for this model: none of its weights match "
                                 f"the {_family(dict(pipeline.unet.config))} UNet or text encoders")
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
