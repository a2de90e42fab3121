"""Take docs/review-page.png: the review page of examples/espresso-spot in headless Chromium.

    .venv/bin/python docs/review_screenshot.py

Renders the example offline in a temporary folder, changes the intro's prompt and applies
again (so the page shows before / after), opens renders/index.html and captures the window.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import Chromium, find_chromium  # noqa: E402


def main() -> None:
    binary = find_chromium()
    if binary is None:
        sys.exit("no chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "espresso-spot"
        shutil.copytree(ROOT / "examples/espresso-spot", work,
                        ignore=shutil.ignore_patterns("renders", ".sparkspec", "*.lock"))
        run = [sys.executable, "-m", "sparkspec", "-C", str(work), "apply", "--auto-approve"]
        subprocess.run(run, check=True, capture_output=True)
        spec = work / "project.spark.yaml"
        spec.write_text(spec.read_text().replace("slow dolly in", "slow dolly out"))
        subprocess.run(run, check=True, capture_output=True)
        browser = Chromium(binary, width=1280, height=1000)
        try:
            browser.open((work / "renders/index.html").as_uri())
            browser.evaluate("document.querySelector('#scene-intro').scrollIntoView({block: 'start'});"
                             "window.scrollBy(0, -300)")
            browser.wait_for(lambda: browser.evaluate(
                "[...document.querySelectorAll('video[src]')].every(v => v.readyState >= 2)"), timeout=30)
            browser.pump(1.5)
            browser.evaluate("document.querySelectorAll('video').forEach(v => v.pause())")
            browser.pump(0.3)
            browser.screenshot(ROOT / "docs/review-page.png")
        finally:
            browser.close()
    print(ROOT / "docs/review-page.png")


if __name__ == "__main__":
    main()
