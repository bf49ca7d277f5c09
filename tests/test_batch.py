"""``accdiffusion batch``: one run folder per line, a summary, bad lines
reported by number and skipped, the same images with ``--ray local``."""

import json
import socket
import time

import pytest

from accdiffusion.batch import parse_prompts
from accdiffusion.cli import main

LINES = [
    json.dumps({"prompt": "a red circle", "seed": 1, "scale": 2, "steps": 2, "name": "red"}),
    '{"prompt": "broken", "seed": ',
    json.dumps({"prompt": "a blue square", "sede": 3}),
    "",
    json.dumps({"prompt": "a green square", "seed": 2, "scale": 2, "steps": 2, "view_batch_size": 4}),
    json.dumps({"prompt": "no size", "scale": 0}),
    json.dumps({"prompt": "on its own device", "device": "cpu"}),
]


def test_prompts_files_json_lines_and_text(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(LINES) + "\n")
    lines = parse_prompts(jsonl)
    assert [line.number for line in lines] == [1, 2, 3, 5, 6, 7]
    by = {line.number: line for line in lines}
    assert by[1].options == {"seed": 1, "scale": 2, "steps": 2} and by[1].name == "red" and by[1].error is None
    assert "not valid JSON" in by[2].error
    assert "unknown setting 'sede'" in by[3].error and "seed" in by[3].error
    assert by[6].error is None  # values are checked later, against the settings
    assert "whole batch" in by[7].error
    text = tmp_path / "p.txt"
    text.write_text("a cat\n\n  {not json} a dog \n")
    assert [(line.number, line.prompt, line.error) for line in parse_prompts(text)] == [
        (1, "a cat", None), (3, "{not json} a dog", None)]


def _batch(tmp_path, tiny_sdxl_path, out, *extra):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(LINES) + "\n")
    return main(["batch", str(prompts), "--model", str(tiny_sdxl_path), "--output", str(out), "-q",
                 "--no-pictures", "--guidance-scale", "1.5", *extra])


@pytest.mark.slow
def test_batch_runs_good_lines_and_reports_bad_ones(tmp_path, tiny_sdxl_path, capsys):
    out = tmp_path / "out"
    assert _batch(tmp_path, tiny_sdxl_path, out) == 3
    err = capsys.readouterr().err
    for number, what in ((2, "not valid JSON"), (3, "unknown setting 'sede'"), (6, "scale=0"),
                         (7, "'device' is set for the whole batch")):
        assert f"prompts.jsonl:{number}: skipped: {what}" in err
    assert sorted(p.name for p in out.iterdir()) == ["batch-summary.json", "line0005-seed2", "red"]
    summary = json.loads((out / "batch-summary.json").read_text())
    assert (summary["lines"], summary["ok"], summary["failed"], summary["invalid"]) == (6, 2, 0, 4)
    assert [r["line"] for r in summary["results"]] == [1, 2, 3, 5, 6, 7]
    record = json.loads((out / "line0005-seed2" / "record.json").read_text())
    assert record["seed"] == 2 and record["settings"]["view_batch_size"] == 4
    assert record["settings"]["guidance_scale"] == 1.5  # the command line's value, for every line
    assert record["batch"]["line"] == 5 and record["model"]["location"] == str(tiny_sdxl_path)
    assert record["processes"] == 1


def test_unreachable_ray_address_fails_fast(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    t0 = time.monotonic()
    assert main(["batch", str(prompts), "--ray", f"127.0.0.1:{port}", "--output", str(tmp_path / "o")]) == 2
    assert time.monotonic() - t0 < 10
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_ray_local_makes_the_plain_images(tmp_path, tiny_sdxl_path):
    pytest.importorskip("ray")
    plain, ray_out = tmp_path / "plain", tmp_path / "ray"
    assert _batch(tmp_path, tiny_sdxl_path, plain) == 3
    assert _batch(tmp_path, tiny_sdxl_path, ray_out, "--ray", "local") == 3
    summary = json.loads((ray_out / "batch-summary.json").read_text())
    assert summary["runner"] == "ray local" and summary["workers"] >= 1 and summary["ok"] == 2
    for name in ("red", "line0005-seed2"):
        assert (ray_out / name / "image.png").read_bytes() == (plain / name / "image.png").read_bytes()
