"""``accdiffusion ui``: the page in a real browser (Debian's Chromium driven by
Playwright), the ``generate`` endpoint through Gradio's client, cancelling
and the queue. One server for the module, started as the command line
starts it, with the shipped shapes model."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.is_dir() else []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``accdiffusion ui`` on a free port; yields (url, output folder); stopped at the end."""
    pytest.importorskip("gradio", reason="accdiffusion-core[ui] is not installed")
    root = tmp_path_factory.mktemp("ui")
    out = root / "outputs"
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "accdiffusion", "ui", "--port", str(port), "--output", str(out)],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"accdiffusion ui exited with {proc.returncode}:\n{(root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"accdiffusion ui did not answer:\n{(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert "Traceback" not in (root / "server.log").read_text(), (root / "server.log").read_text()


def test_generate_endpoint_with_gradio_client(server):
    from gradio_client import Client
    from PIL import Image

    url, out = server
    client = Client(url, verbose=False)
    assert "/generate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    image, record = client.predict("a red circle and a blue square", 2, 4, 7, api_name="/generate")
    assert Image.open(image).size == (64, 64)
    assert record["seed"] == 7 and record["settings"]["steps"] == 4 and record["settings"]["scale"] == 2
    assert [p["scale"] for p in record["phases"]] == [1, 2]
    assert record["phases"][1]["patch_prompts"]
    assert record["model"]["name"] == "shapes"
    folder = Path(record["run_folder"])
    assert folder.parent == out
    assert json.loads((folder / "record.json").read_text())["seed"] == 7
    assert (folder / "attention" / "patch-prompts-scale-2.png").is_file()
    # a bad value is refused with the CLI's message, and nothing is written
    before = _runs(out)
    with pytest.raises(Exception, match="steps=0 is not allowed"):
        client.predict("a red circle", 2, 0, 7, api_name="/generate")
    assert _runs(out) == before


def test_second_request_waits_in_the_queue(server):
    from gradio_client import Client
    from gradio_client.utils import Status

    url, out = server
    client = Client(url, verbose=False)
    first = client.submit("a red circle", 2, 12, 1, api_name="/generate")
    deadline = time.monotonic() + 30
    while first.status().code != Status.PROCESSING and time.monotonic() < deadline:
        time.sleep(0.05)
    second = client.submit("a blue square", 2, 4, 2, api_name="/generate")
    ranks = []
    deadline = time.monotonic() + 60
    while not ranks and not second.done() and time.monotonic() < deadline:
        status = second.status()
        if status.code == Status.IN_QUEUE and status.rank is not None:
            ranks.append(status.rank)
        time.sleep(0.05)
    assert ranks and min(ranks) >= 0, "the second request was never seen waiting in the queue"
    assert first.result()[1]["seed"] == 1 and second.result()[1]["seed"] == 2
    # one generation at a time: the second started after the first ended
    a, b = (json.loads((Path(job.result()[1]["run_folder"]) / "record.json").read_text()) for job in (first, second))
    assert a["created"] <= b["created"]


@pytest.fixture
def page(server):
    if not Path(CHROMIUM).exists():
        print(f"skipping the browser test: {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(server[0])
            page.locator("#generate").wait_for()
            yield page
        finally:
            browser.close()


def test_page_runs_a_prompt_and_shows_phases_pictures_and_record(server, page):
    url, out = server
    # fields start at the shapes model's recommendations (steps 20, guidance 4)
    assert page.locator("#steps input").input_value() == "20"
    assert page.locator("#guidance-scale input").input_value() == "4"
    before = _runs(out)
    page.locator("#prompt textarea").fill("a red circle and a blue square")
    page.locator("#scale input").fill("2")
    page.locator("#steps input").fill("4")
    page.locator("#generate").click()
    page.locator("#final-image img").wait_for(timeout=90_000)
    progress = page.locator("#progress").inner_text()
    assert "phase 1" in progress and "phase 2/2 (64x64)" in progress and "4/4" in progress
    assert page.locator("#phase-images img").count() == 2
    assert page.locator("#patch-prompts img").count() >= 1
    assert page.locator("#attention-maps img").count() == 1
    assert "record.json" in page.locator("#record-file").inner_text()
    seed = int(page.locator("#seed input").input_value())  # the random seed it drew is shown
    new = [r for r in _runs(out) if r not in before]
    assert len(new) == 1 and new[0].endswith(f"-seed{seed}")
    assert json.loads((out / new[0] / "record.json").read_text())["seed"] == seed

    # a bad value: a readable message next to its field, no traceback, nothing written
    page.locator("#steps input").fill("0")
    page.locator("#generate").click()
    page.locator("#error-steps").get_by_text("steps=0 is not allowed").wait_for(timeout=20_000)
    assert page.locator("#error-scale").inner_text().strip() == ""
    assert "Traceback" not in page.content()
    page.locator("#steps input").fill("4")
    page.locator("#scale input").fill("0")
    page.locator("#generate").click()
    page.locator("#error-scale").get_by_text("scale=0 is not allowed").wait_for(timeout=20_000)
    assert page.locator("#error-steps").inner_text().strip() == ""

    # cancel: the run stops between two steps and leaves nothing on disk
    page.locator("#scale input").fill("2")
    page.locator("#steps input").fill("500")
    page.locator("#generate").click()
    # this run's own phase 1 (of 500 steps), not the bar the first run left on the page
    page.locator("#progress [data-phase='phase 1']").get_by_text("/500").wait_for(timeout=30_000)
    page.locator("#cancel").click()
    page.locator("#status").get_by_text("Cancelled").wait_for(timeout=30_000)
    assert "phase 2/2" not in page.locator("#progress").inner_text()
    assert sorted(_runs(out)) == sorted(before + new)
    assert not [name for name in os.listdir(out) if name.endswith(".partial")]


def test_a_closed_page_does_not_leave_the_server_stuck(server, page):
    from gradio_client import Client

    url, out = server
    before = _runs(out)
    page.locator("#prompt textarea").fill("a red circle")
    page.locator("#scale input").fill("2")
    page.locator("#steps input").fill("500")
    page.locator("#generate").click()
    page.locator("#progress [data-phase='phase 1']").wait_for(timeout=30_000)
    page.context.close()  # the visitor goes away in the middle of a long run
    start = time.monotonic()
    image, record = Client(url, verbose=False).predict("a blue square", 2, 4, 5, api_name="/generate")
    assert record["seed"] == 5
    assert time.monotonic() - start < 60
    assert [r for r in _runs(out) if r not in before] == [Path(record["run_folder"]).name]


def test_ui_without_gradio_says_what_to_install(monkeypatch, capsys, tmp_path):
    from accdiffusion import cli

    monkeypatch.setitem(sys.modules, "gradio", None)
    assert cli.main(["ui", "--output", str(tmp_path)]) == 2
    assert "pip install 'accdiffusion-core[ui]'" in capsys.readouterr().err
