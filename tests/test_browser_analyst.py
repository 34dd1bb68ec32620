"""Headless Chromium against the app's analyst tabs (issue 7's acceptance): load a saved
run, filter the case table by a flag, open a case, tag it, export the report and read
the downloaded file back; then the dashboard's four plots; then Side by side on an uploaded clip.

    pytest tests/test_browser_analyst.py -q     (needs Debian's chromium: apt-get install -y chromium)

The run is written by the test (constructed traces in the case-study format, see
tests/test_ui_analyst.py) under a temporary runs root; the app runs in this process
on 127.0.0.1 with a free port and the tiny random model.  Screenshots go to
test-artifacts/ (gitignored).
"""
from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from test_browser import ARTIFACTS, browser_page, serving  # noqa: E402

pytestmark = pytest.mark.browser

NOTE = "collision never happens"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import app
    from test_app import tiny_model
    from test_ui_analyst import write_run

    base = tmp_path_factory.mktemp("analyst")
    (base / "data").mkdir()
    folder = write_run(base / "data", base / "runs", "demo-run")
    demo = app.build_demo(model_loader=tiny_model, examples_dir=base / "no-examples", data_roots=[base / "data"],
                          runs_root=base / "runs", baseline_loaders={"cot": tiny_model})
    with serving(demo, examples_dir=base / "no-examples") as url:
        yield url, folder


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server[0]) as pg:
        yield pg


def _pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a gradio Dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"ul[role=listbox] li:text-is('{option}')").first.click()


def test_filter_open_tag_and_export(page, server):
    page.get_by_role("tab", name="Case study").click()
    page.get_by_label("Load a saved run").check()
    _pick(page, "cs-runs", "demo-run")
    page.locator("#cs-load").click()
    page.wait_for_selector("#cs-summary :text('demo-run')")
    page.wait_for_selector("#cs-count :text('6 of 6 cases match')")

    _pick(page, "cs-flag", "ungrounded_clue")  # c1 and c4 carry it
    page.wait_for_selector("#cs-count :text('2 of 6 cases match')")
    table = page.locator("#cs-table")
    cell = table.get_by_role("gridcell", name="c4", exact=True)
    assert cell.count() == 1 and table.get_by_role("gridcell", name="c0", exact=True).count() == 0

    cell.click()
    page.wait_for_selector("#cs-case :text('c4')")
    page.locator(".flags:visible :text('ungrounded clue')").wait_for()  # the case's trace view
    page.locator(".js-plotly-plot:visible").nth(2).wait_for()  # timeline, filter scores, option probabilities

    page.get_by_label("EventHallusion -- Entire event").check()
    page.locator("#cs-note textarea").fill(NOTE)
    page.locator("#cs-save").click()
    page.wait_for_selector("#cs-tag-status :text('saved tag of c4')")
    page.wait_for_selector(f"#cs-table [role=gridcell]:has-text('{NOTE}')")  # the table shows the tag

    page.locator("#cs-export").click()
    link = page.locator("#cs-report-json a").first
    link.wait_for()
    report = json.loads(page.request.get(link.get_attribute("href")).text())
    (example,) = report["examples"]
    assert example["id"] == "c4" and example["tags"] == {"categories": ["eventhallusion/entire_event"], "note": NOTE}
    md = page.request.get(page.locator("#cs-report-md a").first.get_attribute("href")).text()
    assert NOTE in md and "Analyst tags" in md
    page.screenshot(path=str(ARTIFACTS / "casestudy.png"), full_page=True)
    # written beside the run: a restart keeps it
    assert NOTE in (server[1] / "tags.jsonl").read_text()
    assert "Traceback" not in page.content()


def test_dashboard_shows_the_runs_figures(page):
    page.get_by_role("tab", name="Dashboard").click()
    page.wait_for_selector("#dash-summary :text('demo-run')")
    for name in ("accuracy_by_type", "calibration", "accuracy_by_kept", "stage_costs"):
        page.locator(f"#dash-{name} .js-plotly-plot").wait_for()
    assert "Accuracy per question type" in page.locator("#dash-accuracy_by_type").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_a_path_outside_the_data_root_is_refused_in_the_page(page):
    page.get_by_role("tab", name="Case study").click()
    page.get_by_label("Run the model on a dataset").check()
    page.locator("#cs-data textarea, #cs-data input").first.fill("/etc/passwd")
    page.locator("#cs-run").click()
    status = page.locator("#cs-status .status.error")
    status.wait_for()
    assert "outside the allowed data folders" in status.inner_text()
    assert page.locator("#cs-summary").inner_text().count("demo-run") == 1  # the loaded run stays


def test_side_by_side_answers_an_upload_in_three_modes(page, tmp_path):
    from test_app import TEST_FRAMES, square_clip

    page.get_by_role("tab", name="Side by side").click()
    note = page.locator("#sbs-note").inner_text()
    assert "cot by its trained baseline model" in note and "direct by the ClueNet model prompted" in note
    page.locator("#sbs-video input[type=file]").set_input_files(str(square_clip(tmp_path / "square.mp4")))
    page.locator("#sbs-question textarea").fill("Which way does the square move?")
    for letter, text in zip("AB", ("left", "right")):
        page.locator(f"#sbs-option-{letter} textarea").fill(text)
    page.locator("#sbs-frames input[type=number]").fill(str(TEST_FRAMES))
    page.locator("#sbs-frames input[type=number]").press("Enter")
    page.locator("#sbs-run").click()
    page.wait_for_selector("#sbs-status :text('answered by ClueNet, direct and cot')", timeout=120_000)
    table = page.locator("#sbs-table")
    for mode in ("cluenet", "direct", "cot"):
        assert table.get_by_role("gridcell", name=mode, exact=True).count() == 1
    page.locator("#sbs-plot .js-plotly-plot").wait_for()
    page.screenshot(path=str(ARTIFACTS / "side_by_side.png"), full_page=True)
