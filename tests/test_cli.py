"""The ``accdiffusion`` command: runs, records, pictures, clear errors, no
half-written output."""

import json
import os

import pytest
import torch
from PIL import Image

from accdiffusion import cli
from accdiffusion.adapters import ModelAdapter


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fixture, factor", [("tiny_sdxl_path", 2), ("tiny_sdxl_path", 3),
                                             ("tiny_sd15_path", 2), ("tiny_sd15_path", 3)])
def test_generate_writes_image_record_and_pictures(request, tmp_path, capsys, fixture, factor):
    model = request.getfixturevalue(fixture)
    code, out, err = run(["generate", "a red circle and a blue square", "--model", str(model), "--scale",
                          str(factor), "--steps", "2", "--seed", "3", "--output", str(tmp_path), "--name", "run",
                          "--save-stages"], capsys)
    assert code == 0, err
    folder = tmp_path / "run"
    assert out.strip() == str(folder / "image.png")
    assert Image.open(folder / "image.png").size == (32 * factor, 32 * factor)
    record = json.loads((folder / "record.json").read_text())
    assert record["seed"] == 3 and record["settings"]["steps"] == 2
    assert record["settings"]["height"] == 32 * factor
    assert record["model"]["location"] == str(model)
    assert record["plugins"]["prompt_decomposer"] == "cross_attention"
    assert [p["scale"] for p in record["phases"]] == list(range(1, factor + 1))
    assert all("patch_prompts" in p for p in record["phases"][1:])
    assert record["attention_words"][:2] == ["a", "red"]
    assert sorted(os.listdir(folder / "stages")) == [f"scale-{s}.png" for s in range(1, factor + 1)]
    pictures = sorted(os.listdir(folder / "attention"))
    assert "attention-maps.png" in pictures
    assert [f"patch-prompts-scale-{s}.png" for s in range(2, factor + 1)] == [p for p in pictures if "patch" in p]
    assert "phase 1" in err and "decode" in err  # progress bars per phase
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_same_seed_same_file(tiny_sd15_path, tmp_path, capsys):
    for name in ("a", "b"):
        assert run(["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "2", "--seed", "5", "-q",
                    "--output", str(tmp_path), "--name", name], capsys)[0] == 0
    assert (tmp_path / "a" / "image.png").read_bytes() == (tmp_path / "b" / "image.png").read_bytes()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt-decomposer", "no_such"], "unknown prompt_decomposer 'no_such'; installed: cross_attention, identical"),
        (["--global-guidance", "fancy"], "unknown global_guidance 'fancy'"),
        (["--height", "16"], "height=16 is not allowed: at least the model's native size 32 px"),
        (["--width", "100"], "width=100 is not allowed: a positive multiple of 8"),
        (["--c", "1.5"], "option cross_attention.threshold (given as 'c')='1.5' of the prompt_decomposer "
                         "'cross_attention' from plugin 'prompts' (distribution 'accdiffusion-prompts') is not "
                         "allowed: a number >= 0 and <= 1"),
        (["--sigma", "-1"], "option window_interaction.sigma (given as 'sigma')='-1'"),
        (["--prompt-decomposer", "identical", "--cross-attention-border", "clipped"],
         "option cross_attention.border='clipped' is for the prompt_decomposer 'cross_attention', which is not "
         "selected (this run's prompt_decomposer is 'identical')"),
        (["--option", "nothing.here=1"], "no installed plugin registers a stage called 'nothing'"),
        (["--option", "cross_attention.size=1"], "has no option 'size'; its options: threshold, border, per_token"),
        (["--no-jitter", "--option", "sliding_window.jitter=true"], "option sliding_window.jitter is given twice"),
        (["--stride", "17"], "stride=17 is not allowed: an integer >= 1 (latent pixels), at most the window size 16"),
        (["--steps", "0"], "steps=0 is not allowed: an integer >= 1"),
        (["--image", "missing.png"], "image='missing.png' cannot be read"),
    ],
)
def test_bad_input_is_refused_before_any_model_work(tiny_sd15_path, tmp_path, capsys, monkeypatch, args, message):
    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("accdiffusion.api.load_pipeline", boom)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["generate", "a cat", "--model", str(tiny_sd15_path), "--output", str(tmp_path / "out"),
                          *args], capsys)
    assert code == 2
    assert message in err
    assert not (tmp_path / "out").exists()


def test_unreadable_image_file(tiny_sd15_path, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, _, err = run(["generate", "x", "--model", str(tiny_sd15_path), "--image", str(bad)], capsys)
    assert code == 2 and "cannot be read as an image" in err


def test_model_folder_that_is_not_a_pipeline(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(["generate", "x", "--model", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no model_index.json" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    code, _, err = run(["generate", "x", "--model", str(tmp_path / "other")], capsys)
    assert code == 2 and "incomplete or unreadable" in err or "FluxPipeline" in err


def test_failed_run_leaves_nothing_in_the_output_folder(tiny_sd15_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")

    def broken_save(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cli.main(["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "2", "-q", "--output", str(out)])
    assert sorted(os.listdir(out)) == ["keep.txt"]


def test_failure_during_sampling_writes_nothing(tiny_sd15_path, tmp_path, capsys, monkeypatch):
    def broken(self, *a, **k):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(ModelAdapter, "decode_latents", broken)
    with pytest.raises(RuntimeError):
        cli.main(["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "2", "-q",
                  "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_plugins_command_lists_every_stage(capsys):
    code, out, _ = run(["plugins"], capsys)
    assert code == 0
    for name in ("prompt_decomposer:", "cross_attention", "identical", "sliding_window", "window_interaction",
                 "dilated", "none", "bicubic_latent", "pixel", "models:"):
        assert name in out
    families = out.split("model families (asked in this order):\n")[1].splitlines()
    assert [line.split()[0] for line in families[:3]] == ["sdxl", "sd", "flux"]
    assert "(FluxPipeline)  [accdiffusion.builtins]" in families[2]


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for fragment in ("(default: 50;", "default: 0.3)", "(default: 7.5;", "(default: 16;", "default: 0.8)",
                     "(default: cross_attention)", "(default: window_interaction)", "(default: bicubic_latent)",
                     "(default: sliding_window)", "(default: 3.0)", "(default: float32)", "(default: True)",
                     "(default: False)", "(default: auto)"):
        assert fragment in out, fragment


def test_model_recommendations_apply_unless_the_user_overrides(tmp_path, capsys, tiny_sd15_path):
    from accdiffusion import PluginHost, generate, hookimpl

    class Registers:
        @hookimpl
        def accdiffusion_register_models(self, register):
            register("tiny", str(tiny_sd15_path), description="tiny SD", defaults={"steps": 2, "guidance_scale": 3.0})

    host = PluginHost([Registers()])
    recommended = generate("a cat", model="tiny", host=host, seed=1)
    assert recommended.record["settings"]["steps"] == 2 and recommended.record["settings"]["guidance_scale"] == 3.0
    assert recommended.record["model"]["defaults"] == {"steps": 2, "guidance_scale": 3.0}
    explicit = generate("a cat", model="tiny", host=host, seed=1, steps=1)
    assert explicit.record["settings"]["steps"] == 1 and explicit.record["settings"]["guidance_scale"] == 3.0


def test_model_defaults_must_name_settings():
    from accdiffusion import PluginError, PluginHost, hookimpl

    class Bad:
        @hookimpl
        def accdiffusion_register_models(self, register):
            register("m", "/x", defaults={"stepz": 3})

    with pytest.raises(PluginError, match=r"unknown settings \['stepz'\]"):
        PluginHost([Bad()], entry_points=False)


def test_single_file_checkpoint_that_no_family_reads(tmp_path, capsys, tiny_sd15_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "model.safetensors"
    save_file({"not.a.unet.weight": torch.zeros(2, 2)}, str(ckpt))
    code, _, err = run(["generate", "x", "--model", str(ckpt), "--model-config", str(tiny_sd15_path),
                        "--steps", "1", "-q", "--output", str(tmp_path / "out")], capsys)
    assert code == 2
    assert f"cannot read single-file checkpoint {str(ckpt)!r} as SDXL or SD 1.x/2.x" in err
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    other = tmp_path / "model.bin"
    other.write_bytes(b"\0" * 8)
    code, _, err = run(["generate", "x", "--model", str(other)], capsys)
    assert code == 2 and "not a single-file checkpoint" in err
