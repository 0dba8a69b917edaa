"""The demo's operations side in headless Chromium: log in as the demo user, start the
catalog's jobs from its page, and see them in the live dashboard and the admin.

What a newcomer is promised: a rebuild's progress, a job that fails once and succeeds on
its retry, a failure with its traceback, a periodic job, and a batch with its report.
Screenshots are checked pixel by pixel (see ``test_dashboard_browser.py``): the bars and
the chart must be painted, not only present in the DOM. They are kept in ``tmp_path``.
"""

from __future__ import annotations

import re

import pytest

from tests.example_site import running_example
from tests.test_dashboard_browser import GREEN, RED, painted

pytestmark = pytest.mark.browser

#: The example's own progress bar when done (catalog/base.html).
DONE_GREEN = (24, 128, 56)


@pytest.fixture(scope="module")
def site():
    """The demo's site with its demo user; the digest every 2 s, the dashboard polled fast."""
    with running_example(products=1200, demo_user=True, CATALOG_DIGEST_EVERY="2",
                         EXAMPLE_DASHBOARD_POLL="0.5") as running:
        yield running


def log_in(page, site, *, via: str) -> None:
    """Follow a link of the catalog page to a staff page, and log in where it sends us."""
    page.goto(site.url + "/")
    page.click(via)
    page.wait_for_url(re.compile(r"/admin/login/\?next="))
    page.fill("#id_username", "demo")
    page.fill("#id_password", "demo")
    page.click("input[type=submit]")


def total(page, name: str) -> int:
    return int(page.locator(f'[data-total="{name}"]').inner_text())


def wait_for_total(page, name: str, at_least: int, timeout: float = 30_000) -> None:
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-total=\"{name}\"]').textContent) "
        f">= {at_least}", timeout=timeout)


def test_the_demo_login_opens_the_dashboard_and_the_admin(page, site):
    log_in(page, site, via="#dashboard-link")
    page.wait_for_url("**/taskmill/")
    page.wait_for_function("() => document.getElementById('tm-status').dataset.state === 'live'")
    assert page.locator("#tm-workers tr.tm-alive").count() == 1

    page.goto(site.url + "/")
    page.click("#admin-jobs-link")  # Same session: no second login.
    page.wait_for_url("**/admin/taskmill/job/")
    assert "Select job to view" in page.content()


def test_progress_a_retry_a_failure_a_periodic_job_and_a_batch(page, site, tmp_path):
    log_in(page, site, via="#dashboard-link")
    page.wait_for_url("**/taskmill/")
    dashboard = page
    catalog = page.context.new_page()  # Same session; the dashboard stays open and live.
    catalog.goto(site.url + "/")

    # A retry: the first attempt fails, the job waits for its backoff: "Scheduled".
    catalog.click("#publish-button")
    wait_for_total(dashboard, "scheduled", 1, timeout=10_000)
    # A failure for good, and a batch of one job per category.
    catalog.select_option("#id_supplier", "borealis")
    catalog.click("#import-button")
    catalog.click("#refresh-button")
    assert "Refreshing prices: a batch of 14 jobs" in catalog.locator(".messages").inner_text()

    # Progress: the rebuild's bar on the dashboard, painted, moving.
    catalog.fill("#id_slowdown_ms", "1200")
    catalog.click("#rebuild-button")
    catalog.wait_for_url("**/rebuilds/*/")
    # A chunk is a twelfth of the bar, 12 pixels: painted > 20 needs two. Its processes
    # usually finish their first chunks together, but a loaded machine staggers them and
    # the dashboard may show the first alone (seen in CI).
    dashboard.wait_for_function(
        "() => [...document.querySelectorAll('#tm-running progress')]"
        ".some(p => p.max > 0 && p.value / p.max >= 0.15)",
        timeout=30_000)
    running = dashboard.locator("#tm-running tr", has_text="catalog.tasks.rebuild_index")
    assert "products indexed" in running.locator(".tm-msg").inner_text()
    assert painted(dashboard, "#tm-running progress.tm-progress", GREEN) > 20
    dashboard.screenshot(path=str(tmp_path / "dashboard-rebuilding.png"))

    # Everything finishes: the rebuild, the retried publish, the batch and its report,
    # periodic digests; one failure.
    rebuild = catalog.url.removeprefix(site.url) + "status.json"
    assert site.wait_for_job(rebuild)["status"] == "SUCCESSFUL", site.output()  # fails fast
    catalog.locator("#result").wait_for(state="visible", timeout=10_000)
    assert painted(catalog, "#bar", DONE_GREEN) > 100
    dashboard.wait_for_function(
        "() => document.querySelector('#tm-running .tm-empty') !== null "
        "&& document.querySelector('[data-total=\"waiting\"]').textContent === '0' "
        "&& document.querySelector('[data-total=\"scheduled\"]').textContent === '0'",
        timeout=30_000)
    wait_for_total(dashboard, "failed", 1)
    failing = dashboard.locator("#tm-failing").inner_text()
    assert "catalog.tasks.import_supplier_feed" in failing
    slowest = dashboard.locator("#tm-slowest").inner_text()
    for task in ("rebuild_index", "publish_to_marketplace", "refresh_category_prices",
                 "report_price_refresh", "send_weekly_digest"):
        assert f"catalog.tasks.{task}" in slowest, slowest
    dashboard.screenshot(path=str(tmp_path / "dashboard-done.png"), full_page=True)
    assert painted(dashboard, "#tm-chart", GREEN) > 30
    assert painted(dashboard, "#tm-chart", RED) > 5
    assert painted(dashboard, ".tm-bad .tm-value", RED) > 10

    # The catalog page lists what it started, each with its page in the admin.
    catalog.goto(site.url + "/")
    started = catalog.locator("#started").inner_text()
    assert re.search(r"Publish to the marketplace\s+SUCCESSFUL\s+attempt 2, 1 error", started)
    assert re.search(r"Import the Borealis Outdoor feed\s+FAILED\s+attempt 1, 1 error", started)
    assert re.search(r"Refresh prices \(14 categories\)\s+FINISHED\s+14 succeeded, 0 failed",
                     started)

    # The retry in the admin: attempts 2 / 3, the first attempt's error and traceback.
    catalog.locator("#started tr", has_text="Publish").get_by_text("in the admin").click()
    assert "Successful" in catalog.locator(".field-status").inner_text()
    assert "2 / 3" in catalog.locator(".field-attempts_display").inner_text()
    tracebacks = catalog.locator("pre.taskmill-traceback")
    assert tracebacks.count() == 1
    assert "MarketplaceTimeout: The marketplace did not answer" in tracebacks.inner_text()
    catalog.screenshot(path=str(tmp_path / "admin-retried-job.png"), full_page=True)

    # The failure in the admin: status Failed, the bad row named, the whole traceback.
    catalog.go_back()
    catalog.locator("#started tr", has_text="Borealis").get_by_text("in the admin").click()
    assert "Failed" in catalog.locator(".field-status").inner_text()
    traceback = catalog.locator("pre.taskmill-traceback").inner_text()
    assert traceback.startswith("Traceback (most recent call last):")
    assert "BadFeedRow: Borealis Outdoor feed, line 4: price '12.9O' is not a number" in traceback
    catalog.screenshot(path=str(tmp_path / "admin-failed-job.png"), full_page=True)

    # The batch in the admin: 14 children, all successful, and its then job.
    catalog.go_back()
    catalog.locator("#started tr", has_text="Refresh prices").get_by_text("in the admin").click()
    assert catalog.locator(".field-total .readonly").inner_text() == "14"
    assert "Successful: 14" in catalog.locator(".field-children").inner_text()
    assert "catalog.tasks.report_price_refresh" in catalog.locator(
        ".field-then_task_path").inner_text()
    catalog.locator(".field-then_job_link a").click()
    assert "Successful" in catalog.locator(".field-status").inner_text()
    assert '"products_repriced": 1200' in catalog.locator(".field-return_value_display").inner_text()

    # The periodic job: the scheduler enqueued the digest on its own, more than once.
    catalog.goto(site.url + "/")
    catalog.get_by_role("link", name="its jobs").click()
    catalog.locator("#result_list").wait_for()
    statuses = catalog.locator("#result_list tbody .field-status").all_inner_texts()
    assert statuses.count("Successful") >= 2, statuses
    catalog.screenshot(path=str(tmp_path / "admin-digest-jobs.png"), full_page=True)
