"""Time outside the UNet and the VAE, on a small random SDXL on the CPU.

Builds :func:`accdiffusion_testing.models.make_small_sdxl` (UNet 24.4M
parameters, native 512 px), loads it through the real loading code, and runs
the default AccDiffusion sampler at ``--size`` px for ``--steps`` steps with
the UNet's and the VAE's forward calls wrapped in timers. Everything else
(text encoding, attention-map extraction, decomposition, window extraction
and fusion, permutations, smoothing, scheduler arithmetic, image conversion)
is overhead: ``overhead = wall - unet - vae``.

    python benchmarks/overhead_small_sdxl.py --size 2048 --steps 4 [--threads 1] [--profile 25]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch


class Timer:
    """Accumulates the seconds spent inside wrapped callables, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextlib.contextmanager
    def wrapping(self, name: str, obj: Any, attr: str) -> Iterator[None]:
        original = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(obj, attr, timed)
        try:
            yield
        finally:
            setattr(obj, attr, original)


def load_small_sdxl(folder: Optional[Path] = None) -> Any:
    from accdiffusion.loading import load_pipeline
    from accdiffusion_testing.models import make_small_sdxl

    folder = Path(folder or tempfile.mkdtemp(prefix="small-sdxl-"))
    if not (folder / "model_index.json").is_file():
        make_small_sdxl(folder)
    return load_pipeline(str(folder))


def measure(pipe: Any, size: int = 2048, steps: int = 4, seed: int = 0, **options: Any) -> dict[str, Any]:
    """One run of ``accdiffusion``'s default sampler with the UNet and VAE timed."""
    from accdiffusion import Sampler, Settings

    settings = Settings(prompt="a red fox sitting in the snow forest under the moon with golden light",
                        height=size, width=size, steps=steps, seed=seed, **options)
    sampler = Sampler.from_pipeline(pipe, settings)
    timer = Timer()
    with timer.wrapping("unet", pipe.unet, "forward"), timer.wrapping("vae_decode", pipe.vae, "decode"), \
            timer.wrapping("vae_encode", pipe.vae, "encode"):
        start = time.perf_counter()
        result = sampler(settings)
        wall = time.perf_counter() - start
    unet = timer.seconds.get("unet", 0.0)
    vae = timer.seconds.get("vae_decode", 0.0) + timer.seconds.get("vae_encode", 0.0)
    overhead = wall - unet - vae
    return {
        "size": size, "steps": steps, "schedule": settings.schedule, "threads": torch.get_num_threads(),
        "wall_s": round(wall, 3), "unet_s": round(unet, 3), "vae_s": round(vae, 3),
        "overhead_s": round(overhead, 3), "overhead_of_unet": round(overhead / unet, 4) if unet else None,
        "unet_calls": timer.calls.get("unet", 0), "unet_evaluations": result.unet_evaluations,
        "phases": [{"scale": p.scale, "seconds": round(p.seconds, 3), "unet_evaluations": p.unet_evaluations}
                   for p in result.phases],
    }


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--schedule", default="paper")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model", type=Path, default=None, help="folder to build the model in (reused if present)")
    p.add_argument("--profile", type=int, default=0, help="print the N largest cumulative entries of a cProfile run")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_small_sdxl(args.model)
    measure(pipe, 1024, 1)  # warm-up: first-call costs of kernels and allocator
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    out = measure(pipe, args.size, args.steps, schedule=args.schedule)
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
