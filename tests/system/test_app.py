"""The Streamlit app, started for real (`skin-cancer app`) and driven in headless Debian Chromium by
Playwright: upload an image, read the prediction, find the Grad-CAM overlay; upload a non-image and
read the error."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from skin_cancer import paths
from tests.helpers import free_port, server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As this machine needs them: no sandbox as root, no background connections to a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def serve_app(folder: Path):
    """The app serving the model of the finished pipeline in `folder` on a free loopback port."""
    port = free_port()
    return server(["skin-cancer", "app", "--port", str(port)], port, folder / "app.log", "/_stcore/health", cwd=folder)


@pytest.fixture
def app_url(trained, tmp_path):
    """A finished tiny pipeline and the app serving its model."""
    with serve_app(tmp_path) as url:
        yield url


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser test (`make browser` installs it)", pytrace=False)


def test_upload_shows_prediction_and_grad_cam_and_rejects_a_non_image(app_url, tmp_path):
    """Two browser sessions upload at the same moment (Streamlit runs each in its own thread, on one
    shared model): both get their result; then one goes on to a non-image."""
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    images = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[:2]
    fake = tmp_path / "notes.jpg"
    fake.write_text("not an image at all")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page, other = (browser.new_context(viewport={"width": 1300, "height": 1000}).new_page() for _ in range(2))
        for session in (page, other):
            session.goto(app_url)
            expect(session.get_by_text("Research tool, not a medical device")).to_be_visible(timeout=60_000)
            expect(session.get_by_text("Model card")).to_be_visible(timeout=60_000)
        for session, image in zip((page, other), images):
            session.locator('input[type="file"]').set_input_files(image)
        for session in (page, other):
            expect(session.get_by_text("Label at threshold")).to_be_visible(timeout=90_000)
            text = session.get_by_text("Label at threshold").inner_text()
            assert "benign" in text or "malignant" in text
            expect(session.get_by_text("rejected")).to_have_count(0)
        image = images[0]
        expect(page.get_by_text("Grad-CAM: regions that raised the score")).to_be_visible()
        overlays = page.locator("img[alt], [data-testid='stImage'] img")
        assert overlays.count() >= 2
        page.screenshot(path=str(tmp_path / "prediction.png"), full_page=True)
        page.locator('input[type="file"]').set_input_files([image, str(fake)])
        expect(page.get_by_text("notes.jpg: rejected: not a recognised image")).to_be_visible(timeout=90_000)
        browser.close()
    assert (tmp_path / "prediction.png").stat().st_size > 10_000
    log = (tmp_path / "app.log").read_text()
    assert "oneDNN" not in log and "absl::InitializeLog" not in log  # TensorFlow's start-up logs, hidden without --verbose


def test_a_three_class_model_shows_every_class_and_the_evidence_for_the_top_one(trained_three_classes, tmp_path):
    """K classes in the browser: the card says argmax over K, the upload gets its most probable class,
    the malignant score, a bar per class and a Grad-CAM of the predicted class."""
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    predictions = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv")
    image = predictions.path[0]
    top = predictions.filter(like="probability_").iloc[0].idxmax().removeprefix("probability_")
    with serve_app(tmp_path) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1200})
        page.goto(url)
        expect(page.get_by_text("Most probable of 3 classes")).to_be_visible(timeout=60_000)
        page.locator('input[type="file"]').set_input_files(image)
        expect(page.get_by_text("Most probable:")).to_be_visible(timeout=90_000)
        # The same class as the evaluate stage's predictions, and the same one the Grad-CAM explains.
        assert page.get_by_text("Most probable:").inner_text().split()[2] == top
        expect(page.get_by_text(f"Grad-CAM: evidence for {top}")).to_be_visible()
        expect(page.get_by_text("Malignant score (mel):")).to_be_visible()
        chart = page.locator("[data-testid='stVegaLiteChart']")
        expect(chart).to_be_visible(timeout=30_000)
        for name in ("bkl", "mel", "nv"):  # one bar per class, labelled on its axis
            expect(chart.get_by_text(name, exact=True).first).to_be_attached()
        page.screenshot(path=str(tmp_path / "three_classes.png"), full_page=True)
        browser.close()
    assert (tmp_path / "three_classes.png").stat().st_size > 10_000


def test_sigterm_to_the_app_command_stops_its_server(trained, tmp_path):
    """A service manager stops `skin-cancer app` with SIGTERM: the port must be free afterwards."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    command = [str(Path(sys.executable).parent / "skin-cancer"), "app", "--port", str(port)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with open(tmp_path / "app.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                assert process.poll() is None and time.time() < deadline, (tmp_path / "app.log").read_text()[-2000:]
                time.sleep(1)
        process.send_signal(signal.SIGTERM)  # to the command alone, not its process group
        process.wait(timeout=60)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the app's server still listens"
    finally:
        if process.poll() is None:
            process.kill()
