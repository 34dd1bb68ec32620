"""The app as a user gets it: the shipped default model and the shipped examples
(assets/), driven in headless chromium.  Screenshots: test-artifacts/shipped_*.png."""
from __future__ import annotations

import json

import pytest

from test_browser import ARTIFACTS, browser_page, serving

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def shipped_page(tmp_path_factory):
    import app

    with serving(app.build_demo(runs_root=tmp_path_factory.mktemp("runs"))) as url, browser_page(url) as pg:
        yield pg


def test_shipped_examples_open_with_their_panels(shipped_page):
    page = shipped_page
    page.wait_for_selector("text=ClueNet Explorer")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
    page.wait_for_selector("text=Ground truth")
    body = page.locator("body").inner_text()
    assert "Sampled frames" in body and "Reasoning chain" in body and "Flags and warnings" in body
    page.screenshot(path=str(ARTIFACTS / "shipped_explore.png"), full_page=True)


def test_banner_names_the_shipped_model_and_its_measured_accuracy(shipped_page):
    page = shipped_page
    page.wait_for_selector("#model-banner :text('trained on')")  # the model loads on first use
    banner = page.locator("#model-banner").inner_text()
    meta = json.loads((app_examples().parent / "model" / "cluenet.json").read_text())
    assert "trained on" in banner and meta["trained_on"].split(" (")[0] in banner


def app_examples():
    import app

    return app.EXAMPLES_DIR
