"""Tests of the training script: the data mix, the stored configuration, resuming and --init-from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accdiffusion_shapes import default_model_path, world
from accdiffusion_shapes import train as training
from safetensors.torch import load_file

TINY = ["--batch-size", "2", "--sample-every", "0", "--threads", "1", "--unet-channels", "8", "16", "16",
        "--text-width", "16", "--text-layers", "1"]


def test_batches_without_crops_are_the_first_editions_data() -> None:
    """With crop fraction 0 no coin is drawn: the images are exactly world.sample's sequence."""
    pixels, captions, crops = training.make_batch(np.random.default_rng(4), 6, 0.0, 2, crop_fraction=0.0)
    assert not crops.any()
    rng = np.random.default_rng(4)
    for index in range(6):
        image, text, _ = world.sample(rng, supersample=2)
        rng.random()  # the caption-drop coin
        expected = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
        assert torch.equal(pixels[index], expected) and captions[index] == text


def test_batch_mix_follows_the_crop_fraction_and_the_seed() -> None:
    """All crops at fraction 1, about half at 0.5, the same batch from the same seed."""
    _, only_crops, flags = training.make_batch(np.random.default_rng(1), 40, 0.0, 2, crop_fraction=1.0)
    assert flags.all()
    rng = np.random.default_rng(1)
    expected = []
    for _ in range(40):
        rng.random()  # the mix coin
        expected.append(world.sample_crop(rng, supersample=2)[1])
        rng.random()  # the caption-drop coin
    assert only_crops == expected
    assert not {"small", "large"} & set(" ".join(only_crops).split())

    first = training.make_batch(np.random.default_rng(2), 200, 0.0, 2, crop_fraction=0.5)
    second = training.make_batch(np.random.default_rng(2), 200, 0.0, 2, crop_fraction=0.5)
    assert torch.equal(first[0], second[0]) and first[1] == second[1] and torch.equal(first[2], second[2])
    assert 70 < int(first[2].sum()) < 130
    sized = sum(bool({"small", "large"} & set(text.split())) for text in first[1])
    assert 30 < sized < 100  # whole scenes name a size about half the time, crops never


def test_configuration_has_every_option_that_changes_the_result() -> None:
    """--steps, --threads, --out and the checkpoint/sample intervals are not part of the configuration."""
    config = training.training_config(training.parse_args(["--out", "x", "--steps", "5"]))
    assert set(config) == set(training.CONFIG_OPTIONS) | {"data_version", "init_from", "init_from_sha256"}
    assert config["crop_fraction"] == 0.5 and config["init_from"] is None
    assert config["data_version"] == training.DATA_VERSION
    no_crops = training.parse_args(["--out", "x", "--steps", "5", "--crop-fraction", "0"])
    assert training.training_config(no_crops)["data_version"] == 1
    other = training.training_config(
        training.parse_args(["--out", "y", "--steps", "9", "--threads", "2", "--checkpoint-every", "3",
                             "--sample-every", "0"])
    )
    assert other == config


def test_resume_from_another_configuration_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Exit code 2, each differing option named with both values, nothing in the run folder changed;
    the same configuration resumes."""
    out = tmp_path / "run"
    training.main(["--out", str(out), "--steps", "2", *TINY])
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        training.main(["--out", str(out), "--steps", "4", "--resume", *TINY, "--lr", "0.0005",
                       "--crop-fraction", "0.25"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "crop_fraction: checkpoint 0.5, this run 0.25" in error
    assert "lr: checkpoint 0.001, this run 0.0005" in error
    assert "batch_size" not in error and "steps" not in error
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before

    training.main(["--out", str(out), "--steps", "3", "--resume", *TINY, "--threads", "1"])
    rows = (out / "loss.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["step", "1", "2", "3"]
    assert json.loads((out / "model" / "training.json").read_text())["lr"] == 0.001


def test_a_checkpoint_without_a_configuration_is_refused(tmp_path: Path) -> None:
    """Checkpoints of the first training script store no configuration and cannot be resumed."""
    out = tmp_path / "old"
    out.mkdir()
    torch.save({"step": 10}, out / "checkpoint.pt")
    with pytest.raises(SystemExit) as exit_info:
        training.main(["--out", str(out), "--steps", "20", "--resume", *TINY])
    assert exit_info.value.code == 2
    assert sorted(path.name for path in out.iterdir()) == ["checkpoint.pt"]


def test_init_from_starts_from_the_folders_weights(tmp_path: Path) -> None:
    """With lr 0 one step leaves the shipped model's weights as they are; the configuration names the
    folder, the hash of its weights and its model sizes (not the size options)."""
    out = tmp_path / "fine-tune"
    training.main(["--out", str(out), "--steps", "1", *TINY, "--lr", "0", "--init-from", str(default_model_path())])
    for part, name in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        exported = load_file(out / "model" / part / name)
        shipped = load_file(default_model_path() / part / name)
        assert exported.keys() == shipped.keys()
        assert all(torch.equal(exported[key], shipped[key]) for key in shipped)
    config = json.loads((out / "model" / "training.json").read_text())
    assert config["init_from"] == str(default_model_path().resolve())
    assert len(config["init_from_sha256"]) == 64
    assert (config["unet_channels"], config["text_width"], config["text_layers"]) == ([32, 64, 96], 64, 3)
    with pytest.raises(SystemExit) as exit_info:
        training.main(["--out", str(out), "--steps", "2", "--resume", *TINY, "--lr", "0"])
    assert exit_info.value.code == 2


def test_only_images_allowed_to_be_crops_are_crops() -> None:
    """Images not allowed (noised at or above the crop limit) are whole scenes, drawn exactly as without
    crops; about half of the allowed ones are crops."""
    allowed = torch.tensor([True, False] * 100)
    pixels, captions, crops = training.make_batch(np.random.default_rng(3), 200, 0.0, 2, 0.5, crop_allowed=allowed)
    assert not crops[~allowed].any()
    assert 30 < int(crops.sum()) < 70
    none_allowed = training.make_batch(np.random.default_rng(3), 5, 0.0, 2, 0.5, crop_allowed=torch.zeros(5, dtype=torch.bool))
    whole = training.make_batch(np.random.default_rng(3), 5, 0.0, 2, 0.0)
    assert torch.equal(none_allowed[0], whole[0]) and none_allowed[1] == whole[1]
