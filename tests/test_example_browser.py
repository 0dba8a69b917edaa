"""The example site in headless Chromium: submit the form, watch the bar move, see the result."""

from __future__ import annotations

import time

import pytest

from tests.example_site import running_example

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site():
    """One running example site for this module's tests (each starts its own rebuild)."""
    with running_example(products=1200) as running:
        yield running


def status_path(page, site) -> str:
    return page.url.removeprefix(site.url) + "status.json"


def test_the_progress_bar_moves_and_the_result_appears(page, site):
    page.goto(site.url + "/")
    assert page.locator("#products").inner_text() == "1200"
    page.fill("#id_slowdown_ms", "250")
    page.click("#rebuild-button")
    page.wait_for_url("**/rebuilds/*/")

    bar = page.locator("#bar")
    seen: list[int] = []
    deadline = time.monotonic() + 60
    moved_at = time.monotonic()
    while time.monotonic() < deadline:  # The page updates itself; we only look.
        seen.append(int(bar.get_attribute("aria-valuenow")))
        if page.locator("#result").is_visible():
            break
        if len(seen) > 1 and seen[-1] != seen[-2]:
            moved_at = time.monotonic()
        elif time.monotonic() - moved_at > 20:  # A hang: say so now, with the stacks.
            site.wait_for_job(status_path(page, site), stall=5)
        page.wait_for_timeout(50)

    assert page.locator("#status").inner_text() == "SUCCESSFUL", site.output()
    assert page.locator("#result-entries").inner_text() == "1200"
    assert int(page.locator("#result-processes").inner_text()) > 1
    # Read once more: the last sample may predate the update that showed the result.
    seen.append(int(bar.get_attribute("aria-valuenow")))
    assert seen[-1] == 100 and "done" in bar.get_attribute("class")
    assert any(0 < value < 100 for value in seen), seen  # It moved without a reload.
    assert seen == sorted(seen)
    assert page.locator("#error").is_hidden()


def test_a_failed_rebuild_shows_its_error_in_the_page(page, site):
    page.goto(site.url + "/")
    page.fill("#id_slowdown_ms", "0")
    page.check("#id_fail")
    page.click("#rebuild-button")
    page.wait_for_url("**/rebuilds/*/")
    # The job first (failing fast, with the stacks, if it hangs), then what the page shows.
    assert site.wait_for_job(status_path(page, site))["status"] == "FAILED", site.output()
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "BadProduct: Product #" in error.inner_text()
    assert page.locator("#status").inner_text() == "FAILED"
    assert "failed" in page.locator("#bar").get_attribute("class")
