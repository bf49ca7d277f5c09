"""Tests of the shipped pipeline folder."""

from __future__ import annotations

import json

import numpy as np
import torch
from accdiffusion_shapes import PixelCodec, default_model_path, world
from diffusers import DiffusionPipeline, StableDiffusionPipeline


def test_model_index_names_the_codec() -> None:
    """``model_index.json`` declares the pixel codec by its module path."""
    index = json.loads((default_model_path() / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["vae"] == ["accdiffusion_shapes.codec", "PixelCodec"]


def test_weights_are_small() -> None:
    """All weight files together stay below 20 MB."""
    total = sum(path.stat().st_size for path in default_model_path().rglob("*.safetensors"))
    assert 0 < total < 20_000_000


def test_loads_and_generates() -> None:
    """``DiffusionPipeline.from_pretrained`` gives a working SD pipeline at native size."""
    pipe = DiffusionPipeline.from_pretrained(str(default_model_path()))
    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.vae, PixelCodec)
    assert pipe.vae_scale_factor == 1
    assert pipe.unet.config.sample_size == world.NATIVE_SIZE
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        "a red circle on a white background",
        height=world.NATIVE_SIZE,
        width=world.NATIVE_SIZE,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (1, world.NATIVE_SIZE, world.NATIVE_SIZE, 3)
    assert np.isfinite(images).all()


def test_every_caption_word_is_one_token() -> None:
    """The shipped tokenizer encodes each vocabulary word as a single token."""
    pipe = StableDiffusionPipeline.from_pretrained(str(default_model_path()))
    for word in world.VOCABULARY:
        ids = pipe.tokenizer(word).input_ids
        assert len(ids) == 3, (word, ids)


def test_plugin_registers_the_model() -> None:
    """The ``accdiffusion`` plugin registers the shipped folder under the name ``shapes``."""
    from accdiffusion_shapes import plugin

    calls = []
    plugin.plugin.accdiffusion_register_models(lambda name, location, *a, **options: calls.append((name, location)))
    assert calls == [("shapes", str(default_model_path()))]
    from accdiffusion_testing.kit import host_with

    assert host_with(plugin.plugin).model_location("shapes") == str(default_model_path())


def test_controlnet_training_script_makes_a_controlnet_that_fits_the_model(tmp_path):
    """Two steps of the ControlNet training script; the exported folder loads
    through the real loading code and passes the check against the shapes model."""
    from accdiffusion.loading import load_controlnet, load_pipeline
    from accdiffusion_shapes import default_model_path
    from accdiffusion_shapes.train_controlnet import control_for, main

    main(["--out", str(tmp_path), "--steps", "2", "--batch-size", "2"])
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,elapsed_s" and len(lines) == 3
    pipe = load_pipeline(str(default_model_path()))
    controlnet = load_controlnet(str(tmp_path / "controlnet"), unet=pipe.unet, vae_scale_factor=pipe.vae_scale_factor)
    assert controlnet.config.conditioning_embedding_out_channels == [16]
    # the control image: white edges on black, the scene's size
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(img).rectangle((8, 8, 23, 23), fill="red")
    edges = control_for(img)
    assert edges.shape == (3, 32, 32) and edges.max() == 1.0 and edges[:, 0, 0].sum() == 0


def test_shipped_controlnet_guides_the_shapes_model_end_to_end(tmp_path):
    """The shipped ControlNet loads, fits the model, and changes a run's local path."""
    import accdiffusion
    import torch
    from accdiffusion_shapes import default_controlnet_path

    common = dict(scale=2, steps=3, seed=0)
    plain = accdiffusion.generate("a red circle on a white background", **common)
    guided = accdiffusion.generate("a red circle on a white background", structure_guidance="controlnet",
                                   controlnet=str(default_controlnet_path()), **common)
    assert guided.record["structure_guidance"]["name"] == "controlnet"
    assert plain.latents.shape == guided.latents.shape
    assert not torch.equal(plain.latents, guided.latents)
    # phase 1 is not guided: identical attention maps
    assert torch.equal(plain.attention.maps, guided.attention.maps)
