"""The web page end to end in a real headless Chromium: upload, wait, see the calls.

Needs Debian's `chromium` (installed by .ci/run); Playwright drives it and never
downloads a browser of its own.
"""

from __future__ import annotations

import shutil

import pytest

from tests.serve_server import (
    negative_counts_table,
    patient_table,
    running_server,
    store_with_predictor,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium as root in a container, on a machine with no way out: no sandbox, no GPU,
# and none of the background connections a closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 120_000

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt install chromium)"
)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    store = store_with_predictor(tmp_path_factory.mktemp("page"))
    with running_server(store.path) as base:
        yield base


@pytest.fixture()
def page(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        page = browser.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_url)
        yield page
        browser.close()
    assert not errors, errors


def _loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def test_an_upload_shows_its_calls_map_and_histograms(page, tmp_path) -> None:
    page.wait_for_selector("#predictor option[value='pca-logreg']", state="attached")
    page.wait_for_function(
        "() => document.querySelectorAll('#predictor-figures img').length === 3 && "
        "[...document.querySelectorAll('#predictor-figures img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    assert "logreg on the pca embedding" in page.inner_text("#predictor-about")

    page.set_input_files("#file", str(patient_table(tmp_path / "patient-b.tsv", resistant=True)))
    page.click("#run")
    page.wait_for_selector("#results:not([hidden])")
    rows = page.locator("#cells-table tbody tr")
    assert rows.count() == 40
    assert rows.first.locator("td").nth(0).inner_text() == "p-00000"
    calls = page.locator("#cells-table td.call").all_inner_texts()
    assert calls.count("resistant") > 30
    sample_row = page.locator("#samples-table tbody tr").first.inner_text()
    assert "patient-b" in sample_row and "resistant" in sample_row
    assert page.inner_text("#stage").startswith("done")
    page.wait_for_function(
        "() => ['map', 'histogram'].every(id => document.getElementById(id).complete && "
        "document.getElementById(id).naturalWidth > 0)"
    )
    assert _loaded(page, "#map") and _loaded(page, "#histogram")
    assert page.get_attribute("#cells-csv", "href").endswith("/cells.csv")
    assert page.is_hidden("#error")


def test_a_bad_file_shows_the_ingest_message(page, tmp_path) -> None:
    broken, expected = negative_counts_table(tmp_path, "negative.tsv")
    page.wait_for_selector("#predictor option[value='pca-logreg']", state="attached")
    page.set_input_files("#file", str(broken))
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])")
    shown = page.inner_text("#error")
    assert shown == expected
    assert page.is_hidden("#results")
