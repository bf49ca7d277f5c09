"""One image across two processes (torchrun, gloo, CPU): the same image as one
process, only rank 0 writes, and a rank that dies or hangs makes the other
fail with a clear error instead of waiting forever."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from accdiffusion import generate

DATA = Path(__file__).parent / "data"
PROMPT = "a red circle and a blue square"

# several chunks per step, the last one short: views are split across the ranks
JOBS = {
    "sdxl": ["--scale", "3", "--steps", "3", "--seed", "5", "--view-batch-size", "4"],
    "shapes": ["--scale", "2", "--steps", "3", "--seed", "7", "--view-batch-size", "4"],
    # a flow transformer with embedded guidance: one row per view
    "flux": ["--scale", "2", "--steps", "3", "--seed", "4", "--view-batch-size", "4", "--guidance-scale", "3.5",
             "--multi-guidance-scale", "3.5"],
}


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_make_the_single_process_image(tiny_sdxl_path, tmp_path):
    from accdiffusion_testing.tiny_flux import make_tiny_flux

    models = {"sdxl": str(tiny_sdxl_path), "shapes": "shapes", "flux": str(make_tiny_flux(tmp_path / "flux-model"))}
    jobs = [{"label": label, "argv": ["generate", PROMPT, "--model", models[label], "--output",
                                      str(tmp_path / label), "--name", "run", "-q", *argv]}
            for label, argv in JOBS.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), str(DATA / "distributed_worker.py"), str(tmp_path), json.dumps(jobs)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label, argv in JOBS.items():
        opts = dict(zip(argv[::2], argv[1::2]))
        guidance = {key: float(opts[flag]) for key, flag in (("guidance_scale", "--guidance-scale"),
                                                              ("multi_guidance_scale", "--multi-guidance-scale"))
                    if flag in opts}
        single = generate(PROMPT, model=models[label], scale=int(opts["--scale"]), steps=int(opts["--steps"]),
                          seed=int(opts["--seed"]), view_batch_size=int(opts["--view-batch-size"]), **guidance)
        for rank in (0, 1):
            latents = torch.load(tmp_path / f"{label}.rank{rank}.pt")
            assert torch.equal(latents, single.latents), (label, rank, (latents - single.latents).abs().max())
        # rank 0 alone wrote one run folder, nothing partial
        assert sorted(p.name for p in (tmp_path / label).iterdir()) == ["run"]
        folder = tmp_path / label / "run"
        assert np.array_equal(np.asarray(Image.open(folder / "image.png").convert("RGB")), np.asarray(single.image))
        record = json.loads((folder / "record.json").read_text())
        assert record["processes"] == 2 and single.record["processes"] == 1
        assert record["unet_evaluations"] == single.record["unet_evaluations"]
        dist = record["distributed"]
        assert dist["processes"] == 2 and dist["backend"] == "gloo"
        per = dist["unet_evaluations_per_process"]
        phase1 = single.record["unet_evaluations"]["per_phase"]["1"]  # evaluated by both ranks
        assert sum(per) == single.record["unet_evaluations"]["total"] + phase1 and min(per) > phase1
        assert min(dist["received_bytes_per_process"]) > 0


@pytest.mark.parametrize("mode", ["exits", "hangs"])
def test_a_rank_that_dies_or_hangs_fails_the_other(mode):
    env = dict(_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    worker = [sys.executable, str(DATA / "dead_rank_worker.py"), mode, "3"]
    other = subprocess.Popen(worker, env=dict(env, RANK="1", LOCAL_RANK="1"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        proc = subprocess.run(worker, env=dict(env, RANK="0", LOCAL_RANK="0"), capture_output=True, text=True,
                              timeout=90)
        elapsed = time.monotonic() - t0
    finally:
        other.kill()
        other.wait()
    assert proc.returncode == 7, proc.stdout + proc.stderr[-2000:]
    assert "DistributedError" in proc.stdout and "rank 0 of 2" in proc.stdout
    assert "another process died or stopped answering" in proc.stdout
    if mode == "hangs":
        assert "Timed out" in proc.stdout and "3 s" in proc.stdout
    assert elapsed < 60
