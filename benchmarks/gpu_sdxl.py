"""True-size SDXL timings on one CUDA GPU with random weights.

Builds SDXL-base-1.0's UNet, VAE and both CLIP text encoders at their real
sizes from the published configs in ``architectures.json`` (random weights,
float16, on ``cuda``) with an offline tokenizer, assembles a
``StableDiffusionXLPipeline`` and measures:

1. one UNet forward at batch 2 (classifier-free guidance) on a 128x128 latent;
2. ``accdiffusion.generate`` at 2048x2048 with ``--steps`` steps: total
   seconds, peak memory, seconds per phase (``result.phases``), and the time
   spent inside the UNet per phase, so ``phase - unet`` is the sampler's
   overhead on this GPU;
3. optionally (``--scale 3`` or more) the same at ``scale * 1024`` px;
4. the UNet views per upscaling step, counted by wrapping the adapter's
   ``predict``, against the method's ``(2s-1)^2 + s^2`` (twice for CFG);
5. every run once per schedule of ``--schedules`` (default ``paper fast``);
6. with ``--offload``, the largest size again with model CPU offload
   (``enable_model_cpu_offload``, needs ``accelerate``); the VAE is tiled
   above 2048 px in every run.

Results go to ``$OUT/gpu_results.json`` (``OUT`` defaults to ``.``).
Random weights make meaningless images; sizes, kernels and therefore time and
memory are those of the real model.

``--dry-run`` needs no GPU: it builds every model on the ``meta`` device
(true-size modules, no weight memory), prints the parameter counts and exits.

Usage::

    python benchmarks/gpu_sdxl.py --architectures shared/architectures.json --steps 5 [--scale 4] [--offload]
    python benchmarks/gpu_sdxl.py --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

MODEL_KEY = "sdxl-base-1.0"
PROMPT = "a red fox sitting in the snow forest under the moon with golden light and tall trees near a lake"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architectures", type=Path, default=Path("../shared/architectures.json"),
                        help="published component configs (default: ../shared/architectures.json)")
    parser.add_argument("--steps", type=int, default=5, help="sampling steps per phase (default 5)")
    parser.add_argument("--scale", type=int, default=2,
                        help="also run at scale * 1024 px when above 2 (progressive phases 2..scale)")
    parser.add_argument("--schedules", nargs="+", default=["paper", "fast"],
                        help="schedule stages to run each size with (default: paper fast)")
    parser.add_argument("--offload", action="store_true",
                        help="also run the largest size with model CPU offload (needs accelerate)")
    parser.add_argument("--unet-repeats", type=int, default=10, help="timed repeats of the single UNet forward")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed 1-step generate that compiles kernels for the views' batch sizes")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the models on the meta device, print parameter counts, exit (no GPU needed)")
    return parser.parse_args(argv)


def load_sdxl_configs(path: Path) -> dict[str, dict[str, Any]]:
    """The ``sdxl-base-1.0`` section of ``architectures.json``: configs of ``unet``,
    ``vae``, ``text_encoder``, ``text_encoder_2`` and ``scheduler``."""
    if not path.is_file():
        sys.exit(f"architectures file not found: {path} (pass --architectures)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if MODEL_KEY not in data:
        sys.exit(f"{path} has no {MODEL_KEY!r} entry (has: {', '.join(k for k in data if not k.startswith('_'))})")
    configs = data[MODEL_KEY]
    missing = {"unet", "vae", "text_encoder", "text_encoder_2", "scheduler"} - set(configs)
    if missing:
        sys.exit(f"{path}: {MODEL_KEY} lacks {sorted(missing)}")
    return configs


def split_class(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``config``'s ``class`` entry and the remaining keyword arguments."""
    rest = dict(config)
    return rest.pop("class"), rest


def build_models(configs: dict[str, dict[str, Any]], tokenizer_dir: Path, device: str) -> dict[str, Any]:
    """UNet, VAE, both text encoders (random weights, float32, built directly on
    ``device``), the tokenizers and the scheduler.

    The text encoders keep the published ``vocab_size`` (49408); their special
    token ids are set to the offline tokenizer's, whose ids are all smaller.
    """
    import diffusers
    from accdiffusion_testing.tokenizer import write_clip_tokenizer
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tokenizer_dir))
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    text_configs = {}
    for name, expected in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        class_name, kwargs = split_class(configs[name])
        if class_name != expected.__name__:
            sys.exit(f"{name}: expected class {expected.__name__}, the file says {class_name}")
        if kwargs["vocab_size"] < len(tokenizer):
            sys.exit(f"{name}: vocab_size {kwargs['vocab_size']} is below the tokenizer's {len(tokenizer)} ids")
        text_configs[name] = (expected, CLIPTextConfig(**kwargs, **special))
    scheduler_class, scheduler_kwargs = split_class(configs["scheduler"])
    models: dict[str, Any] = {
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": getattr(diffusers, scheduler_class)(**scheduler_kwargs),
    }
    with torch.device(device):
        models["unet"] = UNet2DConditionModel(**configs["unet"])
        models["vae"] = AutoencoderKL(**configs["vae"])
        for name, (model_class, config) in text_configs.items():
            models[name] = model_class(config)
    return models


def parameter_counts(models: dict[str, Any]) -> dict[str, int]:
    """Number of parameters of every ``torch.nn.Module`` in ``models``."""
    return {name: sum(p.numel() for p in m.parameters())
            for name, m in models.items() if isinstance(m, torch.nn.Module)}


def dry_run(configs: dict[str, dict[str, Any]]) -> None:
    """Build every model on the meta device and print its parameter count."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(configs, Path(tmp), "meta")
    for name, count in parameter_counts(models).items():
        print(f"{name:15s} {count:>14,d} parameters ({count / 1e9:.3f}e9)")
    print(f"built on the meta device in {time.perf_counter() - start:.1f} s; nothing was run")


def cuda_seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` takes between two ``torch.cuda.synchronize()``, and its result."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, value


class UNetMeter:
    """Counts and times the views the sampler gives the UNet, per sampler phase.

    :meth:`progress` is a sampler progress factory: every bar the sampler opens
    ("phase 1", "phase 2/2 (2048x2048)", ..., "decode") starts a new record in
    :attr:`records`. :meth:`wrapping` replaces ``predict`` of an adapter class
    with a wrapper that synchronises around each call and adds its views,
    calls and seconds to the current record.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def progress(self, description: str, total: int) -> "UNetMeter":
        """Start the record of the bar ``description``."""
        self.records.append({"description": description, "views": 0, "calls": 0, "seconds": 0.0})
        return self

    def update(self, n: int = 1) -> None:
        """Bar protocol: nothing to do per step."""

    def close(self) -> None:
        """Bar protocol: nothing to do at the end of a bar."""

    def phases(self) -> list[dict[str, Any]]:
        """The records of the sampling phases, in order (the decode bar left out)."""
        return [r for r in self.records if r["description"].startswith("phase")]

    @contextlib.contextmanager
    def wrapping(self, adapter_class: type) -> Iterator["UNetMeter"]:
        """Meter ``adapter_class.predict`` inside the block."""
        original = adapter_class.predict

        def predict(adapter: Any, latents: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            seconds, out = cuda_seconds(lambda: original(adapter, latents, *args, **kwargs))
            record = self.records[-1]
            record["views"] += int(latents.shape[0])
            record["calls"] += 1
            record["seconds"] += seconds
            return out

        adapter_class.predict = predict
        try:
            yield self
        finally:
            adapter_class.predict = original


def unet_forward(pipe: Any, repeats: int) -> dict[str, float]:
    """One SDXL UNet forward at batch 2 on a 128x128 latent: median seconds of
    ``repeats`` timed calls after two warm-up calls, and peak memory."""
    unet = pipe.unet
    dtype, device = unet.dtype, unet.device
    latents = torch.randn((2, 4, 128, 128), device=device, dtype=dtype)
    embeds = torch.randn((2, 77, 2048), device=device, dtype=dtype)
    added = {"text_embeds": torch.randn((2, 1280), device=device, dtype=dtype),
             "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * 2, device=device, dtype=dtype)}
    t = torch.tensor(500, device=device)

    def forward() -> torch.Tensor:
        return unet(latents, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]

    with torch.inference_mode():
        for _ in range(2):
            cuda_seconds(forward)
        torch.cuda.reset_peak_memory_stats()
        times = sorted(cuda_seconds(forward)[0] for _ in range(repeats))
    return {"median_s": times[len(times) // 2], "min_s": times[0],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def expected_views(scale: int) -> int:
    """UNet views per step of upscaling phase ``scale`` (method section 6), before CFG."""
    return (2 * scale - 1) ** 2 + scale**2


def run_generate(pipe: Any, side: int, steps: int, schedule: str = "paper") -> dict[str, Any]:
    """``accdiffusion.generate`` at ``side x side`` with default stages: total
    seconds, peak memory, per-phase seconds, UNet time and views per phase.

    ``outside_phases_seconds`` is the rest of the call: validation, prompt
    encoding, the final decode and PIL conversion. The meter synchronises
    around every UNet call, which the sampler otherwise might overlap with
    its own work, so ``overhead_seconds`` is an upper bound.
    """
    import accdiffusion
    from accdiffusion import SDXLAdapter

    meter = UNetMeter()
    torch.cuda.reset_peak_memory_stats()
    with meter.wrapping(SDXLAdapter):
        seconds, result = cuda_seconds(lambda: accdiffusion.generate(
            PROMPT, pipeline=pipe, height=side, width=side, steps=steps, seed=0, schedule=schedule,
            progress=meter.progress))
    peak = torch.cuda.max_memory_allocated() / 2**30
    phases = []
    for info, record in zip(result.phases, meter.phases(), strict=True):
        entry = {"scale": info.scale, "latent_size": list(info.latent_size), "seconds": info.seconds,
                 "unet_seconds": record["seconds"], "overhead_seconds": info.seconds - record["seconds"],
                 "unet_calls": record["calls"], "unet_views": record["views"],
                 "unet_evaluations": info.unet_evaluations,
                 "unet_views_per_step": record["views"] / max(1, info.steps - info.start)}
        if info.scale > 1:
            entry["expected_views_per_step"] = 2 * expected_views(info.scale)
            entry["start"] = info.start
        phases.append(entry)
    return {"side": side, "steps": steps, "schedule": schedule, "seconds": seconds, "peak_memory_gib": peak,
            "unet_seconds": sum(p["unet_seconds"] for p in phases), "unet_evaluations": result.unet_evaluations,
            "phases": phases,
            "outside_phases_seconds": seconds - sum(p.seconds for p in result.phases)}


def build_pipeline(configs: dict[str, dict[str, Any]], tokenizer_dir: Path) -> Any:
    """The SDXL pipeline in float16 on ``cuda`` (models built directly on the GPU)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**build_models(configs, tokenizer_dir, "cuda"), add_watermarker=False)
    pipe.to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: Optional[list[str]] = None) -> None:
    """Parse options, then dry-run or measure and write ``$OUT/gpu_results.json``."""
    args = parse_args(argv)
    configs = load_sdxl_configs(args.architectures)
    if args.dry_run:
        dry_run(configs)
        return
    if not torch.cuda.is_available():
        sys.exit("gpu_sdxl.py needs a CUDA GPU (torch.cuda.is_available() is False); "
                 "use --dry-run to check the model configs on a CPU")
    if args.steps < 1 or args.scale < 2:
        sys.exit("--steps must be >= 1 and --scale >= 2")
    out_dir = Path(os.environ.get("OUT", "."))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "dtype": "float16", "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pipe = build_pipeline(configs, Path(tmp))
        results["build_seconds"] = time.perf_counter() - start
    results["parameters"] = parameter_counts({"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder,
                                              "text_encoder_2": pipe.text_encoder_2})
    results["unet_forward_batch2_128"] = unet_forward(pipe, args.unet_repeats)
    print(json.dumps(results["unet_forward_batch2_128"]), flush=True)
    sides = [2048] + ([args.scale * 1024] if args.scale > 2 else [])
    if not args.no_warmup:
        results["warmup_seconds"] = run_generate(pipe, sides[-1], 1)["seconds"]
    runs = []

    def save() -> None:
        (out_dir / "gpu_results.json").write_text(json.dumps({**results, "runs": runs}, indent=2), encoding="utf-8")

    for side in sides:
        for schedule in args.schedules:
            runs.append(run_generate(pipe, side, args.steps, schedule))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "phases"}), flush=True)
            save()
    if args.offload:
        try:
            pipe.enable_model_cpu_offload()
        except Exception as exc:  # accelerate missing or unsupported: say so in the results
            results["offload"] = f"not run: {type(exc).__name__}: {exc}"
        else:
            for schedule in args.schedules:
                run = run_generate(pipe, sides[-1], args.steps, schedule)
                runs.append({**run, "offload": "model"})
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "phases"}), flush=True)
                save()
    save()
    print(f"wrote {out_dir / 'gpu_results.json'}")


if __name__ == "__main__":
    main()
