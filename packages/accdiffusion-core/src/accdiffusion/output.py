"""The run record and writing a run's files atomically.

A run folder is assembled under a hidden temporary name inside the output
folder and renamed into place only when every file is written, so a failed
run leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import attrs

from .errors import SettingsError
from .options import stage_values
from .sampler import Result, Sampler
from .schedulers import make_scheduler
from .settings import Settings, parse_lora


def _stage_records(sampler: Sampler) -> dict[str, Any]:
    """Each stage's name and its option values (the stage object's declared
    options; empty for a stage that declares none or was given as an object
    without them)."""
    return {stage: {"name": name, "options": stage_values(getattr(sampler, stage, None))}
            for stage, name in sampler.stage_names.items()}


def _structure_record(sampler: Sampler) -> dict[str, Any]:
    """The structure guidance that ran and its options (the local path only)."""
    name = sampler.stage_names.get("structure_guidance", "none")
    entry: dict[str, Any] = {"name": name}
    if name != "none":
        entry.update({"applies_to": "local windows", **stage_values(sampler.structure_guidance)})
    return entry


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("accdiffusion-core", "torch", "diffusers", "transformers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def build_record(result: Result, settings: Settings, sampler: Sampler, *, model: Optional[str] = None,
                 seconds: Optional[float] = None, processes: int = 1) -> dict[str, Any]:
    """Everything needed to reproduce and understand a run, as plain JSON
    (``processes``: how many processes shared the UNet work)."""
    a = sampler.adapter
    sched = a.pipeline.scheduler
    plan = result.plan
    phases = []
    for ph in result.phases:
        entry: dict[str, Any] = {"scale": ph.scale, "latent_size": list(ph.latent_size), "seconds": round(ph.seconds, 3),
                                 "unet_evaluations": ph.unet_evaluations, "steps": ph.steps}
        if ph.scale > 1:
            entry["start"] = ph.start
            entry["evaluated_steps"] = ph.steps - ph.start
            entry["skip_residual"] = ph.skip_residual
        if ph.layout is not None:
            entry["pad"] = ph.layout.pad
            entry["windows"] = [[w.top, w.left, w.height, w.width] for w in ph.layout.windows]
        if ph.patch_prompts is not None:
            entry["patch_prompts"] = list(ph.patch_prompts.prompts)
            entry["distinct_patch_prompts"] = len(ph.patch_prompts.unique()[0])
        phases.append(entry)
    resolved = attrs.evolve(settings, seed=result.seed, height=plan.height, width=plan.width)
    return {
        "versions": _versions(),
        "model": {
            "location": model,
            "pipeline": type(a.pipeline).__name__,
            "family": a.family,
            "native_size": a.native_size,
            "vae_scale_factor": a.vae_scale_factor,
        },
        "settings": resolved.to_dict(),
        "seed": result.seed,
        "plugins": dict(sampler.stage_names),
        "stages": _stage_records(sampler),
        "structure_guidance": _structure_record(sampler),
        "lora": [{"location": loc, "scale": scale} for loc, scale in map(parse_lora, settings.lora)],
        "scheduler": {"name": settings.scheduler, "class": type(make_scheduler(settings.scheduler, sched)).__name__,
                      "model_default": type(sched).__name__},
        "plan": {
            "height": plan.height, "width": plan.width, "factor": plan.factor, "scales": list(plan.scales),
            "latent_sizes": [list(s) for s in plan.latent_sizes], "window": plan.window, "stride": plan.stride,
        },
        "attention_words": None if result.attention is None else list(result.attention.words),
        "phases": phases,
        "unet_evaluations": {"total": sum(ph.unet_evaluations for ph in result.phases),
                             "per_phase": {str(ph.scale): ph.unet_evaluations for ph in result.phases}},
        "warnings": list(result.warnings),
        "seconds": None if seconds is None else round(seconds, 3),
        "processes": processes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


#: Longest run name in bytes (UTF-8): room for a ``-NNN`` suffix and the hidden
#: temporary name's prefix and suffix within the usual 255-byte file-name limit.
MAX_NAME_BYTES = 200
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def check_run_name(name: Any) -> str:
    """Return ``name`` if it can name a run folder, else raise :class:`SettingsError`.

    Allowed: letters, digits, ``.``, ``_`` and ``-``, not starting with ``.``
    (so no path separators, ``.``, ``..``, NUL or control characters), at most
    :data:`MAX_NAME_BYTES` bytes.
    """
    allowed = ("letters, digits, '.', '_' and '-', not starting with '.', "
               f"at most {MAX_NAME_BYTES} bytes")
    if not isinstance(name, str) or not name:
        raise SettingsError(f"run name {name!r} is not allowed: {allowed}")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        shown = name[:40] + "..."
        raise SettingsError(f"run name {shown!r} is too long ({len(name.encode('utf-8', 'surrogateescape'))} bytes): "
                            f"{allowed}")
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise SettingsError(f"run name {name!r} is not allowed: {allowed}")
    return name


def check_output_dir(out_dir: Any) -> Path:
    """Check that ``out_dir`` is, or can be created as, a writable folder.

    Raises :class:`SettingsError` naming the path when it is a file, lies under
    a file, or its nearest existing folder is not writable. Creates nothing.
    """
    try:
        out = Path(out_dir)
    except TypeError:
        raise SettingsError(f"output folder {out_dir!r} is not allowed: a path") from None
    text = str(out)
    if "\0" in text or text == "":
        raise SettingsError(f"output folder {text!r} is not allowed: a path without NUL characters")
    probe = out
    while True:
        try:
            is_dir = probe.is_dir()
            exists = is_dir or probe.exists()
        except OSError as exc:  # e.g. a name too long for the file system
            raise SettingsError(f"output folder {text!r} cannot be used: {exc}") from None
        if exists:
            break
        if probe.parent == probe:
            break
        probe = probe.parent
    if not exists:
        raise SettingsError(f"output folder {text!r} cannot be created: no existing parent folder")
    if not is_dir:
        if probe == out:
            raise SettingsError(f"output folder {text!r} exists and is a file, not a folder")
        raise SettingsError(f"output folder {text!r} cannot be created: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == out else f" (its parent {str(probe)!r})"
        raise SettingsError(f"output folder {text!r}{where} is not writable")
    return out


def _make_temp_dir(out: Path, name: str) -> Path:
    """A new hidden folder ``.NAME.XXXXXXXX.partial`` in ``out``, created with
    ``os.mkdir`` (so the umask applies, as for any folder the user makes)."""
    for _ in range(100):
        tmp = out / f".{name}.{secrets.token_hex(4)}.partial"
        try:
            os.mkdir(tmp)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "cannot create a temporary run folder", str(out))


def _rename_into_place(tmp: Path, out: Path, name: str) -> Path:
    """Rename ``tmp`` to ``out/name``, or ``name-1``, ``name-2``, ... when taken.

    The final name is claimed with ``os.mkdir``, which fails for every process
    but one, and ``tmp`` is then renamed onto that empty folder (POSIX renames a
    folder onto an empty one atomically). A concurrent run with the same name
    therefore moves on to the next suffix instead of failing.
    """
    k = 0
    while True:
        final = out / (name if k == 0 else f"{name}-{k}")
        k += 1
        try:
            os.mkdir(final)
        except FileExistsError:
            continue
        try:
            if os.name == "nt":  # Windows renames onto no existing folder: free the claimed name first
                os.rmdir(final)
            os.rename(tmp, final)
        except OSError as exc:
            try:
                os.rmdir(final)
            except OSError:
                pass
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue  # the name was taken after all: try the next one
            raise
        except BaseException:  # an interrupt between claiming and renaming
            try:
                os.rmdir(final)
            except OSError:
                pass
            raise
        return final


def write_run(result: Result, out_dir: str | os.PathLike, name: str, *, attention_pictures: bool = True) -> Path:
    """Write ``image.png``, ``record.json``, stage images and pictures of the
    attention maps and patch prompts to ``out_dir/name``; returns that folder.

    Files appear all at once: they are written to a temporary folder that is
    renamed into place, and removed if anything fails. A name that is taken
    (also by a run finishing at the same moment) gets ``-1``, ``-2``, ...
    """
    from .viz import attention_sheet, patch_prompt_sheet

    check_run_name(name)
    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(out, name)
    try:
        files = {"image": "image.png", "record": "record.json"}
        result.image.save(tmp / "image.png")
        if result.stage_images:
            (tmp / "stages").mkdir()
            for scale, img in result.stage_images:
                img.save(tmp / "stages" / f"scale-{scale}.png")
            files["stages"] = "stages/"
        control_images = result.control_images
        if control_images:
            (tmp / "control").mkdir()
            for scale, img in control_images:
                img.save(tmp / "control" / f"control-scale-{scale}.png")
            files["control"] = "control/"
        if attention_pictures:
            pics = tmp / "attention"
            pics.mkdir()
            if result.attention is not None and len(result.attention.words):
                masks = None if result.prompt_decomposer is None else result.prompt_decomposer.word_masks(result.attention)
                attention_sheet(result.attention, masks).save(pics / "attention-maps.png")
            vsf = result.plan.vae_scale_factor
            for ph in result.phases:
                if ph.layout is not None and ph.patch_prompts is not None:
                    patch_prompt_sheet(result.image, ph.layout, ph.patch_prompts,
                                       vsf * result.plan.latent_sizes[-1][0] / ph.latent_size[0]
                                       ).save(pics / f"patch-prompts-scale-{ph.scale}.png")
            if not any(pics.iterdir()):
                pics.rmdir()
            else:
                files["pictures"] = "attention/"
        record = dict(result.record)
        record["files"] = files
        (tmp / "record.json").write_text(json.dumps(record, indent=2, default=str))
        final = _rename_into_place(tmp, out, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
