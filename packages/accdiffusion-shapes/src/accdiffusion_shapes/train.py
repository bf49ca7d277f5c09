"""Train the shapes-world text-to-image model and export it as a diffusers pipeline.

Usage::

    python -m accdiffusion_shapes.train --out runs/main --steps 5000

Scenes are generated on the fly from a seeded :class:`numpy.random.Generator`.
The UNet and the CLIP text encoder are trained jointly with the epsilon
objective (with offset noise, a per-channel constant added to the noise,
which lets the model produce the pure white and black backgrounds that the
non-zero terminal SNR of the noise schedule would otherwise pull towards grey);
captions are dropped to ``""`` with probability ``--drop-prob`` so the
model supports classifier-free guidance.

Each training image's timestep is drawn first; an image noised below
``--crop-max-timestep`` (default 500 of 1000) is, with probability
``--crop-fraction`` (default 0.5), a native-size crop of a scene rendered
at 2x-4x (:func:`world.sample_crop`: objects cut by the crop keep their
shape word, barely visible ones never occur), and every other image is a
whole scene at native size.  The later steps, where a window's detail is
drawn, so learn to finish part of an object, which is what the windows of a
high-resolution generation see, while the noisiest steps, where the layout
is decided, see exactly the whole scenes of the first edition: a caption
cannot say whether its image is a crop, and crops at those steps (or fewer
whole scenes there) make the model draw objects cut by the border or twice
at native size.  ``--init-from`` starts from the weights of an existing
pipeline folder (fine-tuning, e.g. from the shipped model) instead of a
random initialisation.

Every option that changes the result is the run's *configuration*
(:func:`training_config`): it is stored in every checkpoint and in
``training.json`` of the run and of the exported model, and ``--resume``
refuses a checkpoint of another configuration (exit code 2, naming each
differing option with both values; nothing is written).  ``--steps``,
``--threads``, ``--out``, ``--checkpoint-every`` and ``--sample-every`` are
not part of it.

The run directory receives
``loss.csv``, resumable checkpoints (``checkpoint.pt``), sample grids
(``samples/step_XXXXXX.png``) and finally the pipeline folder ``model/``.
Building the tokenizer needs :mod:`accdiffusion_testing`; the exported folder
contains the tokenizer files, so loading the model does not.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image, ImageDraw
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from accdiffusion_shapes import world
from accdiffusion_shapes.codec import PixelCodec

SAMPLE_PROMPTS: tuple[str, ...] = (
    "a red circle on a white background",
    "a blue square on a black background",
    "a large green triangle on a gray background",
    "a small yellow circle on a black background",
    "a red square and a blue circle on a white background",
    "a white background",
    "an empty gray background",
    "",
)
"""Prompts of the sample grids written during training."""


def build_tokenizer(folder: Path) -> CLIPTokenizer:
    """Write a CLIP tokenizer with one token per word of :data:`world.VOCABULARY` and load it."""
    from accdiffusion_testing.tokenizer import write_clip_tokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder, world.VOCABULARY))


def build_text_encoder(tokenizer: CLIPTokenizer, hidden_size: int = 64, layers: int = 3) -> CLIPTextModel:
    """Create a randomly initialised tiny CLIP text encoder matching ``tokenizer``."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(
    sample_size: int = world.NATIVE_SIZE,
    cross_attention_dim: int = 64,
    block_out_channels: tuple[int, ...] = (32, 64, 96),
) -> UNet2DConditionModel:
    """Create the pixel-space UNet.

    Blocks run at sides ``s``, ``s/2`` and ``s/4``; cross-attention sits in the
    down and up blocks at ``s/4`` (and the mid block), the resolution whose
    attention maps AccDiffusion's prompt decomposer reads.
    """
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def build_scheduler() -> EulerDiscreteScheduler:
    """Create the Stable-Diffusion-style Euler scheduler used for training and sampling."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="leading",
    )


def make_pipeline(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer
) -> StableDiffusionPipeline:
    """Assemble a ``StableDiffusionPipeline`` around the pixel codec."""
    return StableDiffusionPipeline(
        vae=PixelCodec(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def make_batch(
    rng: np.random.Generator,
    batch_size: int,
    drop_prob: float,
    supersample: int,
    crop_fraction: float = 0.0,
    crop_scene_sizes: tuple[int, int] = world.CROP_SCENE_SIZES,
    crop_min_visible: float = world.CROP_MIN_VISIBLE,
    crop_allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Render ``batch_size`` training images as a tensor in ``[-1, 1]`` with their captions and which are crops.

    Each image allowed to be a crop (``crop_allowed``, a boolean tensor;
    default: every image) is a native-size crop of a larger scene
    (:func:`world.sample_crop`) with probability ``crop_fraction``, and a
    whole scene otherwise; no coin is drawn for the others, nor at all with
    ``crop_fraction`` 0, so the data are then exactly those of the first
    edition.  Each caption is replaced by ``""`` with probability
    ``drop_prob``.  The third value is a boolean tensor, true for the crops.
    """
    images, captions, crops = [], [], []
    for index in range(batch_size):
        allowed = crop_fraction > 0 and (crop_allowed is None or bool(crop_allowed[index]))
        if allowed and rng.random() < crop_fraction:
            image, text, _crop = world.sample_crop(
                rng, supersample=supersample, scene_sizes=crop_scene_sizes, min_visible=crop_min_visible
            )
            crops.append(True)
        else:
            image, text, _scene = world.sample(rng, supersample=supersample)
            crops.append(False)
        images.append(np.asarray(image, dtype=np.float32))
        captions.append("" if rng.random() < drop_prob else text)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return pixels, captions, torch.tensor(crops, dtype=torch.bool)


class CaptionEncoder:
    """Tokenize captions the way ``StableDiffusionPipeline.encode_prompt`` does, with a cache."""

    def __init__(self, tokenizer: CLIPTokenizer) -> None:
        """Wrap ``tokenizer``."""
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        """Return padded token ids of shape ``(len(captions), model_max_length)``."""
        for text in captions:
            if text not in self.cache:
                self.cache[text] = self.tokenizer(
                    text,
                    padding="max_length",
                    max_length=self.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids[0]
        return torch.stack([self.cache[text] for text in captions])


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Move the parameters of ``ema`` towards those of ``model``."""
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)


def save_sample_grid(pipe: StableDiffusionPipeline, path: Path, seed: int, per_prompt: int = 4) -> None:
    """Generate ``per_prompt`` images for each of :data:`SAMPLE_PROMPTS` and save them as one grid."""
    images = pipe(
        list(SAMPLE_PROMPTS) * per_prompt,
        height=world.NATIVE_SIZE,
        width=world.NATIVE_SIZE,
        num_inference_steps=20,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="pil",
    ).images
    side = world.NATIVE_SIZE
    grid = Image.new("RGB", (side * len(SAMPLE_PROMPTS), side * per_prompt))
    for index, image in enumerate(images):
        grid.paste(image, ((index % len(SAMPLE_PROMPTS)) * side, (index // len(SAMPLE_PROMPTS)) * side))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * 4, grid.height * 4), Image.Resampling.NEAREST).save(path)


def plot_loss_curve(csv_path: Path, png_path: Path, window: int = 50) -> None:
    """Draw the training loss of ``loss.csv`` (raw and ``window``-step moving average, log scale) as a PNG."""
    with csv_path.open(newline="") as handle:
        rows = [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle)]
    steps = np.array([step for step, _ in rows], dtype=float)
    losses = np.log10(np.array([loss for _, loss in rows]))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid") if len(losses) >= window else losses
    width, height, pad = 640, 360, 48
    low, high = np.floor(losses.min() * 4) / 4, np.ceil(losses.max() * 4) / 4
    last = max(steps[-1], 1.0)

    def point(step: float, value: float) -> tuple[float, float]:
        """Canvas coordinates of a (step, log10 loss) pair."""
        x = pad + (width - 2 * pad) * step / last
        y = height - pad - (height - 2 * pad) * (value - low) / max(high - low, 1e-9)
        return x, y

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((pad, pad, width - pad, height - pad), outline="black")
    for tick in np.arange(low, high + 1e-9, 0.25):
        x, y = point(0, tick)
        draw.line((x - 4, y, x, y), fill="black")
        draw.text((4, y - 6), f"{10**tick:.3g}", fill="black")
    for tick in np.linspace(0, last, 5):
        x, y = point(tick, low)
        draw.line((x, y, x, y + 4), fill="black")
        draw.text((x - 12, y + 8), f"{int(tick)}", fill="black")
    draw.line([point(s, v) for s, v in zip(steps, losses)], fill=(190, 190, 230))
    draw.line([point(s, v) for s, v in zip(steps[window - 1 :], smooth)], fill=(200, 30, 30), width=2)
    draw.text((pad, 16), f"training loss (log scale), {window}-step moving average in red; x: step", fill="black")
    image.save(png_path)


CONFIG_OPTIONS: tuple[str, ...] = (
    "batch_size",
    "lr",
    "warmup",
    "weight_decay",
    "ema_decay",
    "offset_noise",
    "drop_prob",
    "supersample",
    "seed",
    "crop_fraction",
    "crop_scene_sizes",
    "crop_min_visible",
    "crop_max_timestep",
    "unet_channels",
    "text_width",
    "text_layers",
)
"""Options (argparse names) that are part of the training configuration; see :func:`training_config`."""


DATA_VERSION = 2
"""Version of how training images and timesteps are drawn, part of the configuration: 1, whole scenes
only; 2, crops among the images noised below ``--crop-max-timestep``."""


class ConfigMismatch(Exception):
    """A checkpoint was written by a run of another configuration."""


def file_digest(paths: list[Path]) -> str:
    """SHA-256 (hex) of the concatenated contents of ``paths``."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def init_weight_files(folder: Path) -> list[Path]:
    """The UNet and text-encoder weight files of the pipeline folder ``folder``."""
    files = [folder / "unet" / "diffusion_pytorch_model.safetensors", folder / "text_encoder" / "model.safetensors"]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"--init-from {folder}: not a shapes pipeline folder (missing {', '.join(missing)})")
    return files


def training_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``args`` that change the trained weights, as a JSON-friendly dict.

    Model sizes are those of ``--init-from``'s folder when it is given (its
    configs are read), and the initial weights are identified by their path
    and the SHA-256 of their files, so a resumed run must start from the
    same weights.
    """
    config: dict[str, Any] = {}
    for name in CONFIG_OPTIONS:
        value = getattr(args, name)
        config[name] = list(value) if isinstance(value, (list, tuple)) else value
    config["data_version"] = DATA_VERSION if args.crop_fraction > 0 else 1
    config["init_from"] = None
    config["init_from_sha256"] = None
    if args.init_from is not None:
        folder = Path(args.init_from).resolve()
        files = init_weight_files(folder)
        unet_config = json.loads((folder / "unet" / "config.json").read_text())
        text_config = json.loads((folder / "text_encoder" / "config.json").read_text())
        config["unet_channels"] = list(unet_config["block_out_channels"])
        config["text_width"] = text_config["hidden_size"]
        config["text_layers"] = text_config["num_hidden_layers"]
        config["init_from"] = str(folder)
        config["init_from_sha256"] = file_digest(files)
    return config


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per option whose value differs, ``"name: checkpoint X, this run Y"``, sorted by name."""
    lines = []
    for name in sorted(set(stored) | set(current)):
        before, now = stored.get(name, "(not set)"), current.get(name, "(not set)")
        if before != now:
            lines.append(f"{name}: checkpoint {json.dumps(before)}, this run {json.dumps(now)}")
    return lines


def check_resume_config(state: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """Raise :class:`ConfigMismatch` unless checkpoint ``state`` was written with ``config``."""
    stored = state.get("config")
    if stored is None:
        raise ConfigMismatch(f"cannot resume from {path}: the checkpoint stores no training configuration")
    differences = config_differences(stored, config)
    if differences:
        raise ConfigMismatch(
            f"cannot resume from {path}: it was written with another training configuration:\n  "
            + "\n  ".join(differences)
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--steps", type=int, required=True, help="total number of optimisation steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument(
        "--offset-noise",
        type=float,
        default=0.1,
        help="std of extra per-image, per-channel constant noise, so global brightness is learnt from the caption",
    )
    parser.add_argument("--drop-prob", type=float, default=0.1, help="probability of an empty caption")
    parser.add_argument("--supersample", type=int, default=2, help="anti-aliasing factor of the renders")
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=0.5,
        help="share of the training images noised below --crop-max-timestep that are native-size crops of scenes "
        "rendered at 2x-4x (0: whole scenes only)",
    )
    parser.add_argument(
        "--crop-scene-sizes",
        type=int,
        nargs=2,
        default=list(world.CROP_SCENE_SIZES),
        metavar=("MIN", "MAX"),
        help="range of the side (pixels) of the scenes crops are cut from",
    )
    parser.add_argument(
        "--crop-min-visible",
        type=float,
        default=world.CROP_MIN_VISIBLE,
        help="visible share of a crop's area for an object to be named (less but not nothing: the crop is redrawn)",
    )
    parser.add_argument(
        "--crop-max-timestep",
        type=int,
        default=500,
        help="only images noised below this timestep (of 1000; 1000: every timestep) can be crops, so the noisiest "
        "steps, which decide the layout, learn whole scenes only, as in the first edition",
    )
    parser.add_argument("--unet-channels", type=int, nargs="+", default=[32, 64, 96], help="UNet block widths")
    parser.add_argument("--text-width", type=int, default=64, help="text encoder width (= cross-attention dim)")
    parser.add_argument("--text-layers", type=int, default=3, help="text encoder layers")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="pipeline folder whose UNet and text encoder weights start the run (e.g. the shipped model); "
        "its model sizes replace --unet-channels/--text-width/--text-layers",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--sample-every", type=int, default=500, help="0 disables sample grids")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (refused when it was written with another configuration)",
    )
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) training as configured by ``args`` and export the pipeline.

    Returns:
        The exported pipeline folder ``args.out / "model"``.
    """
    torch.set_num_threads(args.threads)
    out: Path = args.out
    checkpoint_path = out / "checkpoint.pt"
    config = training_config(args)
    state = None
    if args.resume and checkpoint_path.exists():
        # Check before writing anything, so a refused resume leaves the run untouched.
        state = torch.load(checkpoint_path, weights_only=False)
        check_resume_config(state, config, checkpoint_path)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = build_tokenizer(out / "tokenizer")
    if config["init_from"] is not None:
        init = Path(config["init_from"])
        if CLIPTokenizer.from_pretrained(init / "tokenizer").get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"--init-from {init}: its tokenizer differs from the shapes world's")
        unet = UNet2DConditionModel.from_pretrained(init / "unet")
        text_encoder = CLIPTextModel.from_pretrained(init / "text_encoder")
    else:
        unet = build_unet(cross_attention_dim=args.text_width, block_out_channels=tuple(args.unet_channels))
        text_encoder = build_text_encoder(tokenizer, hidden_size=args.text_width, layers=args.text_layers)
    ema_unet = copy.deepcopy(unet).requires_grad_(False)
    ema_text_encoder = copy.deepcopy(text_encoder).requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    alphas_cumprod = build_scheduler().alphas_cumprod.float()
    encode = CaptionEncoder(tokenizer)
    (out / "training.json").write_text(json.dumps(config, indent=2) + "\n")

    step, elapsed = 0, 0.0
    if state is not None:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text_encoder.load_state_dict(state["ema_text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, elapsed = state["step"], state["elapsed"]
        state = None
        print(f"resumed at step {step}", flush=True)

    def save_checkpoint() -> None:
        """Atomically write the complete training state."""
        state = {
            "unet": unet.state_dict(),
            "text_encoder": text_encoder.state_dict(),
            "ema_unet": ema_unet.state_dict(),
            "ema_text_encoder": ema_text_encoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "elapsed": elapsed,
            "config": config,
        }
        torch.save(state, checkpoint_path.with_suffix(".tmp"))
        os.replace(checkpoint_path.with_suffix(".tmp"), checkpoint_path)

    log_path = out / "loss.csv"
    new_log = not (args.resume and log_path.exists())
    if not new_log:
        # Drop rows logged after the checkpoint; those steps are repeated now.
        with log_path.open(newline="") as handle:
            kept = [row for row in csv.reader(handle) if row[0] == "step" or int(row[0]) <= step]
        with log_path.open("w", newline="") as handle:
            csv.writer(handle).writerows(kept)
    with log_path.open("w" if new_log else "a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "loss", "lr", "elapsed_s"])
        unet.train()
        text_encoder.train()
        while step < args.steps:
            started = time.perf_counter()
            lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
            for group in optimizer.param_groups:
                group["lr"] = lr
            # The timesteps come first when crops are on: they decide which images may be crops.
            timesteps = torch.randint(0, len(alphas_cumprod), (args.batch_size,)) if args.crop_fraction > 0 else None
            pixels, captions, _crops = make_batch(
                rng,
                args.batch_size,
                args.drop_prob,
                args.supersample,
                args.crop_fraction,
                tuple(args.crop_scene_sizes),
                args.crop_min_visible,
                None if timesteps is None else timesteps < args.crop_max_timestep,
            )
            noise = torch.randn_like(pixels)
            noise += args.offset_noise * torch.randn(len(pixels), pixels.shape[1], 1, 1)
            if timesteps is None:
                timesteps = torch.randint(0, len(alphas_cumprod), (len(pixels),))
            alpha = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
            noisy = alpha.sqrt() * pixels + (1.0 - alpha).sqrt() * noise
            context = text_encoder(encode(captions))[0]
            prediction = unet(noisy, timesteps, context).sample
            loss = torch.nn.functional.mse_loss(prediction, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            decay = min(args.ema_decay, (1.0 + step) / (10.0 + step))
            update_ema(ema_unet, unet, decay)
            update_ema(ema_text_encoder, text_encoder, decay)
            step += 1
            elapsed += time.perf_counter() - started
            log.writerow([step, f"{loss.item():.5f}", f"{lr:.6g}", f"{elapsed:.1f}"])
            if step % 50 == 0:
                log_file.flush()
                print(f"step {step} loss {loss.item():.4f} elapsed {elapsed:.0f}s", flush=True)
            if step % args.checkpoint_every == 0 or step == args.steps:
                save_checkpoint()
            if args.sample_every and step % args.sample_every == 0:
                pipe = make_pipeline(ema_unet, ema_text_encoder, tokenizer)
                pipe.set_progress_bar_config(disable=True)
                save_sample_grid(pipe, out / "samples" / f"step_{step:06d}.png", seed=args.seed)

    export = out / "model"
    pipe = make_pipeline(ema_unet.eval(), ema_text_encoder.eval(), tokenizer)
    pipe.save_pretrained(export, safe_serialization=True)
    # Keep the classic vocab.json / merges.txt too, for transformers releases that need them.
    for source in (out / "tokenizer").iterdir():
        if not (export / "tokenizer" / source.name).exists():
            shutil.copy2(source, export / "tokenizer" / source.name)
    (export / "training.json").write_text(json.dumps(config, indent=2) + "\n")
    plot_loss_curve(log_path, out / "loss.png")
    print(f"exported {export} at step {step}", flush=True)
    return export


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; a refused ``--resume`` exits with status 2."""
    try:
        train(parse_args(argv))
    except ConfigMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
