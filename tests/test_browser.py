"""Headless Chromium against the running app: page load, an example with its plots,
an uploaded clip answered, a corrupt upload rejected with a message.

    pytest tests/test_browser.py -q            (needs Debian's chromium: apt-get install -y chromium)

The app runs in this process on 127.0.0.1 with a free port, a tiny random model
and a temporary examples folder; screenshots go to test-artifacts/ (gitignored).
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 90_000  # CPU-only, shared cores: the first analysis loads the model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(demo, **launch_kwargs):
    """Serve ``demo`` in this process on 127.0.0.1 and a free port; yields its URL, closes it after.
    Skips without playwright and fails with the install line without Debian's chromium."""
    pytest.importorskip("playwright")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    import app

    port = _free_port()
    app.launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import app
    from test_app import _write_examples, tiny_model

    examples = tmp_path_factory.mktemp("examples")
    _write_examples(examples)
    with serving(app.build_demo(model_loader=tiny_model, examples_dir=examples), examples_dir=examples) as url:
        yield url


@contextlib.contextmanager
def browser_page(url: str):
    """A headless Debian-chromium page opened on ``url`` (shared by the browser test files)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(url)
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server) as pg:
        yield pg


def test_page_loads_with_model_banner_and_example_plots(page):
    page.wait_for_selector("text=ClueNet Explorer")
    page.wait_for_selector("#model-banner :text('trained on')")
    # the first example opens on load: its plots render
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
    page.screenshot(path=str(ARTIFACTS / "explore.png"), full_page=True)
    assert page.locator("#model-banner").inner_text().count("trained on") == 1


def test_opening_another_example_and_selecting_a_step(page):
    page.locator("#examples .thumbnail-item, #examples button").nth(1).click()
    page.wait_for_selector("text=Ground truth")
    page.get_by_label("1. (c1)", exact=False).first.check()
    page.wait_for_selector("li.step.selected")
    page.screenshot(path=str(ARTIFACTS / "explore_step.png"), full_page=True)


def test_whatif_rerun_reports_the_answer(page):
    page.get_by_role("tab", name="Explore").click()
    page.locator(".whatif").first.wait_for(state="attached")
    page.get_by_label("c1  shape 1 moves right").first.check()  # drop c1 (kept in the example trace)
    page.get_by_role("button", name="Re-run reasoning").first.click()
    page.locator(".whatif :text('Answer')").first.wait_for()
    text = page.locator(".whatif").first.inner_text()
    assert "you dropped c1" in text and ("unchanged" in text or "changed" in text)
    page.screenshot(path=str(ARTIFACTS / "explore_whatif.png"), full_page=True)


def test_upload_gets_an_answer(page, tmp_path):
    from test_app import TEST_FRAMES, square_clip

    clip = square_clip(tmp_path / "square.mp4")
    page.get_by_role("tab", name="Inspect").click()
    page.locator("#upload-video input[type=file]").set_input_files(str(clip))
    page.locator("#question textarea").fill("Which way does the square move?")
    for letter, text in zip("ABC", ("left", "right", "up")):
        page.locator(f"#option-{letter} textarea").fill(text)
    page.locator("#frames input[type=number]").fill(str(TEST_FRAMES))
    page.locator("#frames input[type=number]").press("Enter")
    page.locator("#analyze").click()
    page.wait_for_selector("#inspect-status :text('Done')")
    assert page.locator("text=Answer:").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "inspect_answer.png"), full_page=True)


def test_corrupt_upload_shows_the_error(page, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    page.reload()  # a fresh form: the earlier test left a clip in the upload box
    page.get_by_role("tab", name="Inspect").click()
    page.locator("#upload-video input[type=file]").set_input_files(str(bad))
    page.locator("#question textarea").fill("Which way does the square move?")
    page.locator("#option-A textarea").fill("left")
    page.locator("#option-B textarea").fill("right")
    page.locator("#analyze").click()
    status = page.locator("#inspect-status .status.error")
    status.wait_for()
    page.screenshot(path=str(ARTIFACTS / "inspect_error.png"), full_page=True)
    text = status.inner_text()
    assert "✗" in text and "cannot open" in text and "as a video" in text  # video.py's message, one line
    assert "Traceback" not in page.content()
