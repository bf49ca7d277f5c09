"""Structure guidance (AccDiffusion v2's ControlNet on the local windows) and LoRA.

Offline: tiny random ControlNets made from the tiny UNets
(``ControlNetModel.from_unet``) are saved and loaded back through
``accdiffusion.loading.load_controlnet``; a tiny LoRA is written with peft and
diffusers' ``save_lora_weights`` and loaded through ``--lora``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from accdiffusion import PluginHost, Settings, generate, hookimpl
from accdiffusion.cli import main
from accdiffusion.errors import ModelError, SettingsError
from accdiffusion.loading import load_controlnet, load_pipeline
from accdiffusion.structure import ControlNetGuidance, auto_canny, canny, window_crops
from accdiffusion.types import StructureRequest, Window, WindowLayout

RUN = dict(scale=2, steps=3, seed=5, view_batch_size=4)


def make_controlnet(model: Path, out: Path, seed: int = 0) -> Path:
    """A random ControlNet for the tiny pipeline at ``model``: its zero
    convolutions get random weights so that the control changes the output."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    with torch.no_grad():
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            conv.weight.normal_(0, 0.3)
    net.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def controlnets(tiny_sdxl_path, tiny_sd15_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnets")
    return {"sdxl": make_controlnet(tiny_sdxl_path, root / "sdxl"),
            "sd15": make_controlnet(tiny_sd15_path, root / "sd15")}


@pytest.fixture(scope="module")
def pipes(tiny_sdxl_path, tiny_sd15_path):
    return {"sdxl": load_pipeline(str(tiny_sdxl_path)), "sd15": load_pipeline(str(tiny_sd15_path))}


# -- canny -------------------------------------------------------------------------


def test_canny_outlines_a_square_and_agrees_with_opencv():
    img = Image.new("L", (40, 40), 30)
    ImageDraw.Draw(img).rectangle([10, 12, 29, 27], fill=220)
    edges = auto_canny(img, 0.33)
    arr = torch.tensor(list(edges.convert("L").getdata())).reshape(40, 40) > 0
    assert arr[12:28, 9:12].any() and arr[12:28, 28:31].any()  # left and right sides
    assert not arr[16:24, 14:26].any() and not arr[:5, :5].any()  # flat inside and outside
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (48, 48)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
    ref = cv2.Canny(smooth, 60, 120) > 0
    ours = canny(torch.from_numpy(smooth.astype(np.float32)), 60, 120).numpy()
    inner = (slice(2, -2), slice(2, -2))
    assert (ours[inner] == ref[inner]).mean() > 0.97


# -- the crops ----------------------------------------------------------------------


class _Marker:
    """A phase image with one bright square at a known pixel."""

    def __init__(self, size, at):
        self.size, self.at = size, at

    def __call__(self):
        img = Image.new("RGB", (self.size[1], self.size[0]), (0, 0, 0))
        y, x = self.at
        ImageDraw.Draw(img).rectangle([x, y, x + 1, y + 1], fill=(255, 255, 255))
        return img


def test_each_window_gets_the_region_of_the_control_image_under_it(tmp_path):
    v, pad = 2, 3
    latent = (24, 40)
    at = (17, 45)  # image pixels on the unpadded phase image
    marker = _Marker((latent[0] * v, latent[1] * v), at)
    path = tmp_path / "control.png"
    marker().save(path)
    guidance = ControlNetGuidance(image=str(path)).with_model(object())
    windows = (Window(0, 0, 16, 16), Window(5, 14, 16, 16), Window(11, 27, 16, 16), Window(pad + 8, pad + 20, 16, 16))
    request = StructureRequest(scale=2, layout=WindowLayout(windows, *latent, pad), latent_size=latent, vae_scale_factor=v,
                               steps=4, previous_image=lambda: pytest.fail("a control image needs no decoding"))
    views = guidance.control(request)
    assert views.images.shape == (len(windows), 3, 32, 32)
    hits = 0
    for win, crop in zip(windows, views.images):
        y, x = at[0] + pad * v - win.top * v, at[1] + pad * v - win.left * v  # on the padded image
        inside = 0 <= y < 31 and 0 <= x < 31
        bright = torch.nonzero(crop[0] > 0.5)
        if inside:
            hits += 1
            assert bright.min(0).values.tolist() == [y, x] and bright.max(0).values.tolist() == [y + 1, x + 1]
        else:
            assert bright.numel() == 0
    assert hits == 2
    # the crops are where the SDXL crop coordinates say: (top, left) * v on the padded image
    whole = window_crops(torch.ones(3, latent[0] * v, latent[1] * v), request)
    assert whole[0, 0, :pad * v].sum() == 0 and whole[0, 0, pad * v:, pad * v:].min() == 1
    assert [p for p, _ in guidance.pictures()] == [2] and guidance.pictures()[0][1].size == (80, 48)


# -- loading ------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
def test_tiny_controlnet_loads_and_guides_the_unet(pipes, controlnets, family):
    from accdiffusion.adapters import SDAdapter, SDXLAdapter

    adapter = (SDXLAdapter if family == "sdxl" else SDAdapter)(pipes[family])
    net = load_controlnet(str(controlnets[family]), torch.float32, "cpu", unet=adapter.unet, vae_scale_factor=2)
    assert type(net).__name__ == "ControlNetModel"
    x = torch.randn(2, 4, 16, 16)
    cond = adapter.encode_prompts(["a cat", "a dog"])
    crops = torch.tensor([[0, 0], [8, 4]])
    with torch.no_grad():
        down, mid = adapter.control_residuals(net, x, 500, cond, crops, (64, 64), torch.rand(2, 3, 32, 32), 0.5)
        plain = adapter.predict(x, 500, cond, crops, (64, 64))
        guided = adapter.predict(x, 500, cond, crops, (64, 64), down_block_additional_residuals=down,
                                 mid_block_additional_residual=mid)
        zero = adapter.predict(x, 500, cond, crops, (64, 64), down_block_additional_residuals=[d * 0 for d in down],
                               mid_block_additional_residual=mid * 0)
    assert not torch.allclose(plain, guided)
    assert torch.equal(plain, zero)


def test_controlnet_of_the_other_family_is_refused_before_sampling(pipes, controlnets, tmp_path):
    with pytest.raises(ModelError, match="addition_embed_type"):
        generate("a cat", pipeline=pipes["sdxl"], structure_guidance="controlnet",
                 controlnet=str(controlnets["sd15"]), **RUN)
    with pytest.raises(ModelError, match="ControlNet .*ControlNetModel"):
        generate("a cat", model=str(controlnets["sd15"]), **RUN)
    with pytest.raises(SettingsError, match="needs a ControlNet"):
        generate("a cat", pipeline=pipes["sd15"], structure_guidance="controlnet", **RUN)


def test_cli_bad_inputs_write_nothing(tiny_sd15_path, controlnets, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "2", "-q", "--output", str(out)]
    bad_image = tmp_path / "not-an-image.png"
    bad_image.write_text("no pixels here")
    cases = [
        (["--structure-guidance", "controlnet", "--controlnet", str(controlnets["sd15"]),
          "--control-image", str(bad_image)], "option controlnet.image="),
        (["--lora", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["--lora", "x.safetensors:big"], "is not a number"),
        (["--structure-guidance", "controlnet", "--controlnet", str(controlnets["sdxl"])], "addition_embed_type"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


# -- runs ---------------------------------------------------------------------------


def test_none_is_the_default_and_leaves_the_output_bit_identical(pipes):
    default = generate("a cat", pipeline=pipes["sd15"], **RUN)
    none = generate("a cat", pipeline=pipes["sd15"], structure_guidance="none", **RUN)
    assert Settings(prompt="x").structure_guidance == "none"
    assert torch.equal(default.latents, none.latents)
    assert none.record["structure_guidance"] == {"name": "none"} and none.control_images == ()


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
def test_controlnet_guides_the_local_windows(pipes, controlnets, family, tmp_path):
    from accdiffusion import write_run

    plain = generate("a cat", pipeline=pipes[family], **RUN)
    opts = dict(RUN, structure_guidance="controlnet", controlnet=str(controlnets[family]))
    guided = generate("a cat", pipeline=pipes[family], **opts)
    again = generate("a cat", pipeline=pipes[family], **opts)
    assert not torch.allclose(plain.latents, guided.latents)
    assert torch.equal(guided.latents, again.latents)
    assert guided.unet_evaluations == plain.unet_evaluations
    rec = guided.record["structure_guidance"]
    assert rec["name"] == "controlnet" and rec["scale"] == 0.5 and rec["canny_sigma"] == 0.33
    assert [s for s, _ in guided.control_images] == [2]
    assert guided.control_images[0][1].size == (64, 64)
    folder = write_run(guided, tmp_path, "run", attention_pictures=False)
    assert (folder / "control" / "control-scale-2.png").is_file()
    assert json.loads((folder / "record.json").read_text())["files"]["control"] == "control/"
    # the global path only: no window is guided, so the output is the unguided one
    glob_plain = generate("a cat", pipeline=pipes[family], **dict(RUN, local_path=False))
    glob_guided = generate("a cat", pipeline=pipes[family], **dict(opts, local_path=False))
    assert torch.equal(glob_plain.latents, glob_guided.latents)


def test_controlnet_steps_window(pipes, controlnets):
    opts = dict(RUN, structure_guidance="controlnet", controlnet=str(controlnets["sd15"]))
    plain = generate("a cat", pipeline=pipes["sd15"], **RUN)
    late = generate("a cat", pipeline=pipes["sd15"], controlnet_start=0.5, **opts)  # the last of 3 steps only
    full = generate("a cat", pipeline=pipes["sd15"], **opts)
    assert not torch.equal(late.latents, plain.latents) and not torch.equal(late.latents, full.latents)
    never = generate("a cat", pipeline=pipes["sd15"], controlnet_start=0.7, **opts)  # 2/3 < 0.7: no step guided
    assert torch.equal(never.latents, plain.latents)


# -- LoRA ---------------------------------------------------------------------------


def write_lora(pipe, path: Path, *, text_encoders: bool = False, seed: int = 0) -> Path:
    """A random LoRA for ``pipe``'s UNet attention projections (and its text
    encoders), saved with diffusers' ``save_lora_weights`` for its family."""
    import copy

    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    torch.manual_seed(seed)
    config = LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet = copy.deepcopy(pipe.unet)
    unet.add_adapter(config)
    layers = {"unet_lora_layers": get_peft_model_state_dict(unet)}
    if text_encoders:
        te_config = LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                               target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
        names = ["text_encoder"] + (["text_encoder_2"] if hasattr(pipe, "text_encoder_2") else [])
        for name in names:
            enc = inject_adapter_in_model(te_config, copy.deepcopy(getattr(pipe, name)))
            layers[f"{name}_lora_layers"] = get_peft_model_state_dict(enc)
    type(pipe).save_lora_weights(str(path), **layers)
    return path / "pytorch_lora_weights.safetensors"


def test_lora_through_the_cli_changes_the_output(tiny_sd15_path, tmp_path):
    pytest.importorskip("peft")
    pipe = load_pipeline(str(tiny_sd15_path))
    lora = write_lora(pipe, tmp_path / "lora")
    out = tmp_path / "out"
    base = ["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "2", "--seed", "3", "-q",
            "--no-pictures", "--output", str(out)]
    assert main(base + ["--name", "plain"]) == 0
    assert main(base + ["--name", "lora", "--lora", f"{lora}:0.8"]) == 0
    a = Image.open(out / "plain" / "image.png")
    b = Image.open(out / "lora" / "image.png")
    assert a.tobytes() != b.tobytes()
    rec = json.loads((out / "lora" / "record.json").read_text())
    assert rec["lora"][0]["location"] == str(lora) and rec["lora"][0]["scale"] == 0.8
    assert rec["lora"][0]["components"] == ["unet"]


def test_sdxl_lora_reaches_both_text_encoders_and_a_foreign_lora_is_refused(tiny_sdxl_path, tiny_sd15_path, tmp_path):
    pytest.importorskip("peft")
    from accdiffusion.loading import apply_loras

    sdxl = load_pipeline(str(tiny_sdxl_path))
    lora = write_lora(sdxl, tmp_path / "xl", text_encoders=True)
    records = apply_loras(sdxl, [f"{lora}:0.5"])
    assert records[0]["components"] == ["text_encoder", "text_encoder_2", "unet"] and records[0]["scale"] == 0.5
    # loading again replaces the first set instead of failing on a taken adapter name
    assert apply_loras(sdxl, [str(lora)])[0]["scale"] == 1.0
    sd15 = load_pipeline(str(tiny_sd15_path))
    foreign = write_lora(sd15, tmp_path / "sd15")
    fresh = load_pipeline(str(tiny_sdxl_path))
    with pytest.raises(ModelError, match="sd15.*not a LoRA for this model|cannot be loaded"):
        apply_loras(fresh, [str(foreign)])
    assert not any(fresh.get_list_adapters().values())


# -- a third-party structure guidance -------------------------------------------------


class _Recorder:
    """Asks for the previous phase's image once per request; guides nothing."""

    def __init__(self):
        self.prepared, self.requests, self.sizes = 0, [], []

    def prepare(self, adapter):
        self.prepared += 1

    def pictures(self):
        return ()

    def control(self, request):
        self.requests.append(request)
        self.sizes.append(request.previous_image().size)
        return None


class _RecorderPlugin:
    def __init__(self):
        self.stage = _Recorder()

    @hookimpl
    def accdiffusion_register_structure_guidances(self, register):
        register("recorder", lambda settings: self.stage, description="record the requests")


def test_a_plugin_structure_guidance_gets_each_phase_and_its_previous_image(pipes):
    plugin = _RecorderPlugin()
    host = PluginHost([plugin])
    assert {"controlnet", "none", "recorder"} <= set(host.registry.names("structure_guidance"))
    plain = generate("a cat", pipeline=pipes["sd15"], **dict(RUN, scale=3))
    res = generate("a cat", pipeline=pipes["sd15"], host=host, structure_guidance="recorder", **dict(RUN, scale=3))
    stage = plugin.stage
    assert stage.prepared == 1 and [r.scale for r in stage.requests] == [2, 3]  # fixed windows: once per phase
    assert stage.sizes == [(32, 32), (64, 64)]  # phase 1's image, then phase 2's
    assert [r.latent_size for r in stage.requests] == [(32, 32), (48, 48)] and stage.requests[0].vae_scale_factor == 2
    assert torch.equal(plain.latents, res.latents)
    assert res.record["plugins"]["structure_guidance"] == "recorder"
