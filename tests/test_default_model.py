"""The README's main command: the shipped shapes model is the default and
brings its recommended settings."""

import json
import re
from pathlib import Path

from PIL import Image

from accdiffusion import PluginHost, cli

README = Path(__file__).resolve().parents[1] / "README.md"


def test_shapes_is_registered_with_its_recommendations():
    host = PluginHost()
    assert Path(host.model_location("shapes"), "model_index.json").is_file()
    assert host.model_defaults("shapes")["scale"] == 4
    assert host.model_defaults("shapes")["negative_prompt"] == ""


def test_readme_main_command_runs_at_4x_on_the_default_model(tmp_path, capsys):
    text = README.read_text()
    command = re.search(r"pip install -r requirements\.txt && (accdiffusion generate [^\n]+)", text).group(1)
    prompt = re.search(r'"([^"]+)"', command).group(1)
    # the README's command, with few steps to keep the test short
    code = cli.main(["generate", prompt, "--steps", "2", "--seed", "0", "-q", "--output", str(tmp_path),
                     "--name", "run"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "run" / "image.png").size == (128, 128)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["model"]["name"] == "shapes"
    assert record["settings"]["scale"] == 4 and record["settings"]["guidance_scale"] == 4.0
    assert record["settings"]["steps"] == 2  # the flag given wins over the recommendation
    assert len(record["phases"]) == 4
