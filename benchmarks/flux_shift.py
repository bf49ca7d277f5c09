"""FLUX.1-dev's dynamic shift for an upscaling phase: from a window's token count or the canvas's.

Prints, for each final size, the token count, ``mu`` and the schedule's sigmas
(30 steps) with the shift computed from one native-size window (what
accdiffusion does) and from the whole canvas, using FLUX.1-dev's scheduler
config from ``shared/architectures.json`` (no weights needed)::

    python benchmarks/flux_shift.py
"""

from __future__ import annotations

from diffusers import FlowMatchEulerDiscreteScheduler

from accdiffusion.models.noise import flow_shift_mu, schedule_for

CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
          "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
NATIVE = 1024
STEPS = 30


def tokens(side_px: int) -> int:
    return (side_px // 16) ** 2  # VAE factor 8, 2x2 packing


def sigmas(n_tokens: int) -> list[float]:
    noise = schedule_for(FlowMatchEulerDiscreteScheduler(**CONFIG))
    noise.set_timesteps(STEPS, tokens=n_tokens)
    return [float(s) for s in noise.scheduler.sigmas[:-1]]


def main() -> None:
    print("| shift from | side (px) | tokens | mu | sigma at steps 0, 10, 20, 25, 29 | steps with sigma > 0.9 |")
    print("|---|---|---|---|---|---|")
    for side in (NATIVE, 2048, 4096):
        for label, n in (("window", tokens(NATIVE)), ("canvas", tokens(side))):
            if side == NATIVE and label == "canvas":
                continue
            s = sigmas(n)
            picks = ", ".join(f"{s[k]:.3f}" for k in (0, 10, 20, 25, 29))
            print(f"| {label} | {side} | {n} | {flow_shift_mu(n, CONFIG):.2f} | {picks} | "
                  f"{sum(x > 0.9 for x in s)} of {STEPS} |")


if __name__ == "__main__":
    main()
