"""Bad input of every kind: a clear error naming the bad value, exit status 2
(1 for out of memory, 130 for Ctrl-C), no traceback, nothing written, and
the model never loaded for anything that can be checked before."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import accdiffusion
from accdiffusion import cli
from accdiffusion.errors import ModelError, PluginError, SettingsError


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the weights would be loaded."""

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("accdiffusion.api.load_pipeline", boom)


def cli_error(argv, capsys, out: Path, code: int = 2) -> str:
    status = cli.main(argv)
    stdout, err = capsys.readouterr()
    assert status == code, err
    assert stdout == ""
    assert "Traceback" not in err
    assert err.startswith("accdiffusion: error: ") and err.count("\n") == 1, err
    assert not out.exists() or [p for p in os.listdir(out) if p != "keep.txt"] == []
    return err


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# -- the command line ----------------------------------------------------------


def test_output_and_name_errors(tiny_sd15_path, tmp_path, capsys, no_load, monkeypatch):
    model = ["--model", str(tiny_sd15_path)]
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    out = tmp_path / "out"
    err = cli_error(["generate", "a cat", *model, "--output", str(afile)], capsys, out)
    assert str(afile) in err and "is a file" in err
    err = cli_error(["generate", "a cat", *model, "--output", str(afile / "sub")], capsys, out)
    assert str(afile) in err and "is a file" in err
    for name in ("..", ".", "a/b", "x" * 300, "nul\0byte", "bell\x07", ".hidden", "/abs"):
        err = cli_error(["generate", "a cat", *model, "--output", str(out), "--name", name], capsys, out)
        assert "run name" in err and (repr(name) in err or repr(name[:40] + "...") in err), err
    assert "too long (300 bytes)" in cli_error(["generate", "a cat", *model, "--output", str(out), "--name", "x" * 300],
                                               capsys, out)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    err = cli_error(["generate", "a cat", *model, "--output", str(out)], capsys, out)
    assert f"output folder {str(out)!r}" in err and "not writable" in err


@pytest.mark.parametrize("device, message", [
    ("cuda", "device='cuda' is not available"),
    ("cuda:7", "device='cuda:7'"),
    ("mps", "device='mps' is not available"),
    ("garbage", "device='garbage' is not a torch device name"),
    ("cpu:3", "device='cpu:3' does not exist"),
])
def test_device_errors(tiny_sd15_path, tmp_path, capsys, no_load, device, message):
    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    err = cli_error(["generate", "a cat", "--model", str(tiny_sd15_path), "--device", device,
                     "--output", str(tmp_path / "out")], capsys, tmp_path / "out")
    assert message in err and "available here: auto, cpu" in err


def broken_copy(src: Path, dst: Path, file: str, content: str | None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    if content is None:
        (dst / file).unlink()
    else:
        (dst / file).write_text(content)
    return dst


def _edit(path: Path, file: str, **changes):
    config = json.loads((path / file).read_text())
    for k, v in changes.items():
        if v is ...:
            config.pop(k)
        else:
            config[k] = v
    return json.dumps(config)


def test_model_folder_errors(tiny_sd15_path, tmp_path, capsys, no_load):
    out = tmp_path / "out"
    cases = [
        ("model_index.json", "[1, 2]", ["model_index.json must hold a JSON object, not a list"]),
        ("model_index.json", '"StableDiffusionPipeline"', ["model_index.json must hold a JSON object, not a str"]),
        ("model_index.json", "{not json", ["model_index.json is not valid JSON"]),
        ("unet/config.json", _edit(tiny_sd15_path, "unet/config.json", sample_size=...),
         ["unet/config.json key 'sample_size' is missing"]),
        ("unet/config.json", _edit(tiny_sd15_path, "unet/config.json", sample_size="32"),
         ["unet/config.json key 'sample_size' is '32'", "a positive integer"]),
        ("vae/config.json", _edit(tiny_sd15_path, "vae/config.json", block_out_channels=...),
         ["vae/config.json key 'block_out_channels' is missing"]),
        ("vae/config.json", _edit(tiny_sd15_path, "vae/config.json", block_out_channels=7),
         ["vae/config.json key 'block_out_channels' is 7"]),
        ("vae/config.json", None, ["vae/config.json is missing"]),
    ]
    for k, (file, content, messages) in enumerate(cases):
        folder = broken_copy(tiny_sd15_path, tmp_path / f"m{k}", file, content)
        err = cli_error(["generate", "a cat", "--model", str(folder), "--output", str(out)], capsys, out)
        assert repr(str(folder)) in err
        for m in messages:
            assert m in err, (m, err)


def test_image_errors(tiny_sd15_path, tmp_path, capsys, no_load):
    out = tmp_path / "out"
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    err = cli_error(["generate", "a cat", "--model", str(tiny_sd15_path), "--image", str(bomb),
                     "--output", str(out)], capsys, out)
    assert repr(str(bomb)) in err and "10000000000 pixels" in err and "limit is 67108864 pixels" in err
    folder = tmp_path / "folder.png"
    folder.mkdir()
    err = cli_error(["generate", "a cat", "--model", str(tiny_sd15_path), "--image", str(folder),
                     "--output", str(out)], capsys, out)
    assert repr(str(folder)) in err and "cannot be read as an image" in err


def test_plugins_variable_names_missing_plugins(tiny_sd15_path, tmp_path, capsys, no_load, monkeypatch):
    monkeypatch.setenv("ACCDIFFUSION_PLUGINS", "prompts,tiling,no_such_plugin")
    err = cli_error(["generate", "a cat", "--model", str(tiny_sd15_path), "--output", str(tmp_path / "out")],
                    capsys, tmp_path / "out")
    assert "ACCDIFFUSION_PLUGINS" in err and "no_such_plugin" in err and "installed entry points" in err
    assert "prompts" in err and "tiling" in err
    err = cli_error(["plugins"], capsys, tmp_path / "out")
    assert "no_such_plugin" in err


def test_out_of_memory_is_one_clear_error(tiny_sd15_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"

    def oom(self, settings, *, image=None, progress=None):
        bar = progress("phase 2/2 (64x64)", 3)
        bar.update()
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(accdiffusion.Sampler, "__call__", oom)
    err = cli.main(["generate", "a cat", "--model", str(tiny_sd15_path), "--output", str(out), "--steps", "1"])
    stderr = capsys.readouterr().err
    assert err == 1
    assert "Traceback" not in stderr
    last = stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("accdiffusion: error: out of memory during phase 2/2 (64x64) at 64x64 px"), stderr
    for advice in ("--offload model", "--view-batch-size", "Tried to allocate 20.00 GiB"):
        assert advice in last
    assert not out.exists() or os.listdir(out) == []
    monkeypatch.setattr(accdiffusion.Sampler, "__call__",
                        lambda self, *a, **k: (_ for _ in ()).throw(RuntimeError("DefaultCPUAllocator: out of memory")))
    with pytest.raises(accdiffusion.ResourceError, match="out of memory during preparing|out of memory during"):
        accdiffusion.generate("a cat", model=str(tiny_sd15_path), steps=1)


def test_quiet_silences_loading_bars_and_library_warnings(tiny_sd15_path, tmp_path, capfd):
    code = cli.main(["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "1", "-q",
                     "--output", str(tmp_path), "--name", "q"])
    out, err = capfd.readouterr()
    assert code == 0
    assert out.strip() == str(tmp_path / "q" / "image.png")
    assert err == ""


# -- the Python API ------------------------------------------------------------


def test_api_errors(tiny_sd15_path, no_load):
    model = str(tiny_sd15_path)
    with pytest.raises(SettingsError, match=r"unknown option 'stepz' \(did you mean steps\?\); valid options: .*seed"):
        accdiffusion.generate("a cat", model=model, stepz=3)
    with pytest.raises(SettingsError, match="settings= is not an option"):
        accdiffusion.generate("a cat", model=model, settings={"steps": 3})
    for field in ("progressive", "skip_residual", "local_path", "save_stages"):
        for value in ("false", "true", 0, 1, None):
            with pytest.raises(SettingsError, match=f"{field}={value!r} is not allowed: a boolean"):
                accdiffusion.generate("a cat", model=model, **{field: value})
    # plugin options also take their command-line spellings ("false"), nothing else
    for alias, key in (("jitter", "sliding_window.jitter"), ("gaussian_smoothing", "window_interaction.gaussian_smoothing")):
        for value in ("maybe", 0, 1, None):
            with pytest.raises(SettingsError, match=re.escape(f"option {key} (given as {alias!r})={value!r} of the ")
                               + ".* is not allowed: .*true or false"):
                accdiffusion.generate("a cat", model=model, **{alias: value})
    for field in ("guidance_scale", "attention_strength", "steps"):
        with pytest.raises(SettingsError, match=f"{field}=True is not allowed"):
            accdiffusion.generate("a cat", model=model, **{field: True})
    for alias, key in (("c", "cross_attention.threshold"), ("sigma", "window_interaction.sigma")):
        with pytest.raises(SettingsError, match=re.escape(f"option {key} (given as {alias!r})=True of the")):
            accdiffusion.generate("a cat", model=model, **{alias: True})
    with pytest.raises(SettingsError, match=r"option c=0.5 is for the "
                                            r"prompt_decomposer 'cross_attention' or the prompt_decomposer 'sam', "
                                            r"which is not selected \(this run's prompt_decomposer is 'identical'\)"):
        accdiffusion.generate("a cat", model=model, c=0.5, prompt_decomposer="identical")
    with pytest.raises(SettingsError, match="prompt=None is not allowed: a string"):
        accdiffusion.generate(None, model=model)
    with pytest.raises(SettingsError, match="plugin_options=3"):
        accdiffusion.generate("a cat", model=model, plugin_options=3)
    with pytest.raises(SettingsError, match="model=3 is not allowed"):
        accdiffusion.generate("a cat", model=3)
    with pytest.raises(SettingsError, match="host=dict is not allowed"):
        accdiffusion.generate("a cat", model=model, host={})
    with pytest.raises(PluginError, match="tiler object dict does not implement Tiler"):
        accdiffusion.generate("a cat", model=model, tiler={"name": "sliding_window"}, prompt_decomposer=None)
    with pytest.raises(SettingsError, match="device='cuda:9'"):
        accdiffusion.generate("a cat", model=model, device="cuda:9")
    with pytest.raises(ModelError, match="no model_index.json"):
        accdiffusion.generate("a cat", model=str(tiny_sd15_path / "unet"))


def test_api_images(tiny_sd15_path, no_load):
    model = str(tiny_sd15_path)
    bad = [
        (Image.new("RGB", (0, 0)), "image=<PIL image> is not allowed: it has no pixels"),
        (np.zeros((0, 5, 3), np.uint8), "it has no pixels"),
        (np.zeros((5, 5, 3), np.float32), "numpy array 5x5x3 float32"),
        (np.zeros((5, 5, 2), np.uint8), "must be HxWx3"),
        (b"not an image", "image=<12 bytes> cannot be read as an image"),
        (png_header(100_000, 100_000), "limit is 67108864 pixels"),
        (42, "image of type int is not allowed"),
        (torch.zeros(3, 4, 4), "image of type Tensor is not allowed"),
    ]
    for image, message in bad:
        with pytest.raises(SettingsError) as info:
            accdiffusion.generate("a cat", model=model, image=image)
        assert message in str(info.value)
    from accdiffusion.api import load_image

    buf = __import__("io").BytesIO()
    Image.new("RGB", (6, 5), (1, 2, 3)).save(buf, "PNG")
    assert load_image(buf.getvalue()).getpixel((0, 0)) == (1, 2, 3)
    array = np.full((5, 6, 3), 9, np.uint8)
    assert load_image(array).size == (6, 5) and load_image(array[..., 0]).mode == "RGB"
    assert load_image(Image.new("L", (3, 3))).mode == "RGB"


def test_api_accepts_a_numpy_image(tiny_sd15_path):
    array = np.zeros((64, 64, 3), np.uint8)
    array[16:48, 16:48] = (200, 30, 30)
    result = accdiffusion.generate("a red square", model=str(tiny_sd15_path), image=array, steps=1, seed=1)
    assert result.image.size == (64, 64)


# -- Ctrl-C ----------------------------------------------------------------------


def _interrupt(argv, tmp_path, wait_for: str | None, delay: float = 0.0) -> tuple[int, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # a terminal's Ctrl-C reaches a process whose SIGINT is not ignored; a test run started in the
    # background of a non-interactive shell inherits SIGINT ignored, so the child gets the default back
    proc = subprocess.Popen([sys.executable, "-m", "accdiffusion", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks: list[bytes] = []
    seen = threading.Event()

    def read():
        while True:
            data = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else proc.stderr.read(1)
            if not data:
                break
            chunks.append(data)
            if wait_for is not None and wait_for.encode() in b"".join(chunks):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if wait_for is not None:
        assert seen.wait(120), b"".join(chunks).decode(errors="replace")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    reader.join(10)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_a_run(tiny_sd15_path, tmp_path):
    out = tmp_path / "out"
    code, err = _interrupt(["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "10000", "--seed", "1",
                            "--output", str(out), "--name", "run"], tmp_path, wait_for="phase 1")
    assert code == 130, err
    assert "Traceback" not in err
    assert err.rstrip("\n").split("\n")[-1] == "accdiffusion: interrupted", repr(err[-300:])
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_start_up(tiny_sd15_path, tmp_path):
    code, err = _interrupt(["generate", "a cat", "--model", str(tiny_sd15_path), "--output", str(tmp_path / "out")],
                           tmp_path, wait_for=None, delay=0.4)
    assert code == 130, err
    assert "Traceback" not in err
    assert err.rstrip("\n").split("\n")[-1] == "accdiffusion: interrupted", repr(err[-300:])
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
