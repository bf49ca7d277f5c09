"""Take the screenshots in docs/ui/ of ``accdiffusion ui`` with the shapes model.

    python docs/ui/screenshots.py

Starts the app on a free port, drives Debian's Chromium (/usr/bin/chromium)
with Playwright, saves ``page-during.png`` (a run in phase 3 of 4, with a
second page's request waiting in the queue), ``page-after.png`` (the finished
run) and ``page-bad-input.png`` (a refused value) here, and stops the app.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = "a red circle and a blue square on a white background"


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, "-m", "accdiffusion", "ui", "--port", str(port), "--output",
                                   os.path.join(tmp, "outputs")], cwd=tmp)
        try:
            for _ in range(360):
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                other = browser.new_page(viewport={"width": 1400, "height": 1300})
                for pg in (page, other):
                    pg.goto(url)
                    pg.locator("#prompt textarea").fill(PROMPT)
                    pg.locator("#random-seed input").uncheck()
                page.locator("#seed input").fill("3")
                page.locator("#generate").click()
                page.locator("#progress [data-phase^='phase 1']").wait_for(timeout=60_000)
                other.locator("#generate").click()  # waits in the queue
                page.locator("#progress [data-phase^='phase 3/4']").wait_for(timeout=300_000)
                time.sleep(1.0)
                page.screenshot(path=HERE / "page-during.png", full_page=True)
                other.screenshot(path=HERE / "page-queued.png", full_page=True)
                other.locator("#cancel").click()
                other.close()
                page.locator("#final-image img").wait_for(timeout=300_000)
                time.sleep(1.5)
                page.screenshot(path=HERE / "page-after.png", full_page=True)
                page.locator("#steps input").fill("0")
                page.locator("#generate").click()
                page.locator("#error-steps").get_by_text("steps=0").wait_for(timeout=30_000)
                time.sleep(0.5)
                page.screenshot(path=HERE / "page-bad-input.png", clip={"x": 0, "y": 0, "width": 720, "height": 900})
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
