"""The web page end to end in a real headless Chromium: upload, wait, see the calls.

Needs Debian's `chromium` (installed by .ci/run); Playwright drives it and never
downloads a browser of its own.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.serve_server import (
    PC9_PREDICTOR,
    PC9_UNSEEN,
    negative_counts_table,
    patient_table,
    running_server,
    store_with_pc9_predictor,
    store_with_predictor,
    write_pc9_h5ad,
)
from tests.synthetic import counts_matrix, write_genes_by_cells

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


@pytest.fixture(scope="module")
def pc9_url(tmp_path_factory):
    """A server whose predictor was fitted on real PC9 cells, for uploads of real cells."""
    store = store_with_pc9_predictor(tmp_path_factory.mktemp("pc9-page"))
    with running_server(store.path) as base:
        yield base


@contextmanager
def browser_page(url: str) -> Iterator:
    """The page at `url` in headless Chromium; any script error on it fails the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        yield page
        browser.close()
    assert not errors, errors


@pytest.fixture()
def page(page_url):
    with browser_page(page_url) as page:
        yield page


@pytest.fixture()
def pc9_page(pc9_url):
    with browser_page(pc9_url) as page:
        page.wait_for_selector(f"#predictor option[value='{PC9_PREDICTOR}']", state="attached")
        yield page


def _loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def test_an_upload_shows_its_calls_map_and_histograms(page, tmp_path) -> None:
    page.wait_for_selector("#predictor option[value='pca-logreg']", state="attached")
    page.wait_for_function(
        "() => document.querySelectorAll('#predictor-figures img').length === 4 && "
        "[...document.querySelectorAll('#predictor-figures img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    about = page.inner_text("#predictor-about")
    assert "logreg on the pca embedding" in about
    assert "held out by" in about and "MCC" in about and "calling every cell sensitive" in about
    assert "Probabilities calibrated by" in about and "out-of-fold ECE" in about
    figures = page.locator("#predictor-figures img")
    assert "/figures/reliability.png" in figures.nth(3).get_attribute("src")

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
    assert page.is_hidden("#domain-warning")


def test_cells_unlike_the_training_cells_are_marked_outside_the_domain(page, tmp_path) -> None:
    """Marker genes 256-fold up where the predictor's resistant cells carry them 4-fold:
    every cell lies beyond the training cells, and the page says the call extrapolates."""
    counts = counts_matrix(40, True, 71, fold_change=256.0)
    page.set_input_files("#file", str(write_genes_by_cells(tmp_path / "far.tsv", counts)))
    page.click("#run")
    page.wait_for_selector("#domain-warning:not([hidden])")
    warning = page.inner_text("#domain-warning")
    assert "Sample far: outside the predictor's domain (0 % of its called cells" in warning
    sample_row = page.locator("#samples-table tbody tr").first.inner_text()
    assert "outside the predictor's domain" in sample_row
    headers = page.locator("#cells-table th").all_inner_texts()
    assert headers[-2:] == ["domain_score", "in_domain"]
    in_domain = page.locator("#cells-table tbody tr td:last-child").all_inner_texts()
    assert set(in_domain) == {"false"}


def test_a_sample_of_both_kinds_of_cells_is_shown_uncertain(page, page_url, tmp_path) -> None:
    counts = np.vstack([counts_matrix(30, False, 72), counts_matrix(30, True, 73)])
    page.set_input_files("#file", str(write_genes_by_cells(tmp_path / "both.tsv", counts)))
    page.click("#run")
    page.wait_for_selector("#results:not([hidden])")
    headers = page.locator("#samples-table th").all_inner_texts()
    assert "fraction 95 % interval" in headers and "fraction_low" not in headers
    row = page.locator("#samples-table tbody tr").first
    cells = dict(zip(headers, row.locator("td").all_inner_texts(), strict=True))
    assert cells["call"] == "uncertain" and row.get_attribute("class") == "uncertain"
    (summary,) = httpx.get(f"{page_url}/api/jobs/{_newest_job(page_url)['id']}/samples.json").json()
    assert summary["fraction_low"] < 0.5 < summary["fraction_high"]
    low, high = cells["fraction 95 % interval"].split("–")
    assert float(low) == pytest.approx(summary["fraction_low"], abs=5e-4)
    assert float(high) == pytest.approx(summary["fraction_high"], abs=5e-4)


def _results_shown(page) -> dict[str, str]:
    """What the page shows of a finished job: its tables, figures and links."""
    page.wait_for_selector("#results:not([hidden])")
    shown = {
        name: page.inner_text(f"#{name}")
        for name in ("results-summary", "samples-table", "cells-table", "stage")
    }
    for link in ("map", "histogram"):
        shown[link] = page.get_attribute(f"#{link}", "src")
    for link in ("map-svg", "histogram-svg", "cells-csv", "cells-json", "samples-csv"):
        shown[link] = page.get_attribute(f"#{link}", "href")
    return shown


def _newest_job(base: str) -> dict:
    return httpx.get(f"{base}/api/jobs").raise_for_status().json()[0]


def test_a_failed_job_shows_its_error_and_stops_its_bar(page, tmp_path) -> None:
    broken, expected = negative_counts_table(tmp_path, "negative.tsv")
    page.wait_for_selector("#predictor option[value='pca-logreg']", state="attached")
    page.set_input_files("#file", str(broken))
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == expected
    assert page.is_hidden("#results")
    assert page.inner_text("#stage").startswith("failed while reading")
    bar = page.eval_on_selector(
        "#progress", "p => ({indeterminate: p.matches(':indeterminate'), cls: p.className})"
    )
    assert bar == {"indeterminate": False, "cls": "failed"}
    failed = page.locator("#jobs-table tr.state-failed", has_text="negative.tsv").first
    assert failed.locator("td").nth(2).inner_text() == "failed"

    page.reload()
    page.locator("#jobs-table tr.state-failed", has_text="negative.tsv").first.locator(
        "button"
    ).click()
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == expected
    assert page.inner_text("#stage").startswith("failed while reading")
    assert page.is_hidden("#results")


def test_an_h5ad_patient_column_is_chosen_and_names_the_samples(pc9_page, pc9_url, tmp_path):
    columns = {"control": PC9_UNSEEN, "erlotinib": PC9_UNSEEN}
    upload = write_pc9_h5ad(tmp_path / "two-patients.h5ad", columns, column="patient")
    pc9_page.set_input_files("#file", str(upload))
    pc9_page.wait_for_selector("#sample-column option[value='patient']", state="attached")
    assert pc9_page.input_value("#sample-column") == "patient"
    assert pc9_page.is_hidden("#sample-label")
    assert "100 cells; per-cell columns: patient" in pc9_page.inner_text("#upload-status")
    pc9_page.click("#run")
    shown = _results_shown(pc9_page)
    job = _newest_job(pc9_url)
    assert job["filename"] == "two-patients.h5ad" and job["sample_column"] == "patient"
    samples = httpx.get(f"{pc9_url}/api/jobs/{job['id']}/samples.json").json()
    assert sorted(s["sample"] for s in samples) == ["control", "erlotinib"]
    assert "control" in shown["samples-table"] and "erlotinib" in shown["samples-table"]


def test_an_earlier_job_reopens_from_the_list_as_it_finished(pc9_page, pc9_url, tmp_path):
    upload = write_pc9_h5ad(tmp_path / "reopened.h5ad", {"erlotinib": PC9_UNSEEN})
    pc9_page.set_input_files("#file", str(upload))
    pc9_page.wait_for_selector("#upload-status:has-text('reopened.h5ad: 50 cells')")
    pc9_page.click("#run")
    finished = _results_shown(pc9_page)
    job = _newest_job(pc9_url)
    assert finished["cells-table"].count("erlotinib_") == 50
    # A job takes its upload; running the same file again sends it again.
    pc9_page.click("#run")
    pc9_page.wait_for_function(
        f"() => !document.getElementById('results').hidden && "
        f"document.getElementById('results').dataset.job !== '{job['id']}'"
    )
    again = _newest_job(pc9_url)
    assert again["id"] != job["id"] and again["state"] == "done"

    pc9_page.reload()
    rows = pc9_page.locator("#jobs-table tbody tr")
    assert rows.nth(0).get_attribute("data-job") == again["id"]  # newest first
    row = rows.nth(1)
    assert row.get_attribute("data-job") == job["id"]
    assert row.locator("td").nth(1).inner_text() == PC9_PREDICTOR
    assert row.locator("td").nth(2).inner_text() == "done"
    assert pc9_page.is_hidden("#results")
    row.locator("button").click()
    assert _results_shown(pc9_page) == finished
    assert "current" in row.get_attribute("class")


def test_a_finished_job_shows_the_genes_behind_its_calls(pc9_page, pc9_url, tmp_path):
    cells = {"control": PC9_UNSEEN, "erlotinib": PC9_UNSEEN}
    pc9_page.set_input_files("#file", str(write_pc9_h5ad(tmp_path / "genes.h5ad", cells)))
    pc9_page.wait_for_selector("#upload-status:has-text('genes.h5ad: 100 cells')")
    pc9_page.click("#run")
    _results_shown(pc9_page)
    assert pc9_page.is_hidden("#genes-result")
    pc9_page.click("#rank-genes")
    pc9_page.wait_for_selector("#genes-result:not([hidden])")
    pc9_page.wait_for_function(
        "() => document.getElementById('volcano').complete && "
        "document.getElementById('volcano').naturalWidth > 0"
    )
    base = f"{pc9_url}/api/jobs/{_newest_job(pc9_url)['id']}"
    ranked = httpx.get(f"{base}/genes.json?top=15").raise_for_status().json()
    sizes = ranked["group_sizes"]
    assert sizes["resistant"] + sizes["sensitive"] + ranked["n_no_call"] == 100
    table = pd.read_csv(io.StringIO(httpx.get(f"{base}/genes.csv").text), keep_default_na=False)
    for group in ("resistant", "sensitive"):
        shown = pc9_page.locator(f"#genes-{group} tbody tr td:first-child").all_inner_texts()
        assert shown == [row["gene"] for row in ranked["top"][group]]
        assert shown == table[table["group"] == group]["gene"].head(15).tolist()
    status = pc9_page.inner_text("#genes-status")
    assert f"between {sizes['resistant']} cells called resistant" in status
    assert pc9_page.get_attribute("#volcano-svg", "href").endswith("/genes/volcano.svg")
    assert httpx.get(f"{base}/genes/volcano.svg").text.lstrip().startswith("<?xml")
