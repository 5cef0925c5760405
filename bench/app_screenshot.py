"""Render docs/app.png: `skin-cancer app` on a finished workspace (its model, operating point and
reports), one test image and one non-image uploaded in headless Chromium, the page captured.

    python bench/app_screenshot.py bench/results/default
    python bench/app_screenshot.py bench/results/default --image ../shared/data/skin-cancer-mvb/test/malignant/1012.jpg
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import free_port, server  # noqa: E402 - the tests' real-server helper
from tests.system.test_app import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path, help="a folder where the pipeline ran (models/, reports/)")
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared/data/skin-cancer-mvb/test/malignant/1012.jpg")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "app.png")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp) / "notes.jpg"
        fake.write_text("not an image at all")
        port = free_port()
        command = ["skin-cancer", "app", "--port", str(port)]
        with server(command, port, Path(tmp) / "app.log", "/_stcore/health", cwd=args.workspace.resolve()) as url:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1560})
                page.goto(url)
                page.locator('input[type="file"]').set_input_files([str(args.image.resolve()), str(fake)])
                expect(page.get_by_text("notes.jpg: rejected")).to_be_visible(timeout=120_000)
                expect(page.get_by_text("Grad-CAM: regions that raised the score")).to_be_visible(timeout=120_000)
                page.wait_for_timeout(2000)  # let the images finish drawing
                page.screenshot(path=str(args.out))  # Streamlit scrolls inside the page: the viewport is the page
                browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
