"""The dashboard in headless Chromium: it follows real jobs run by a real worker.

Screenshots are checked pixel by pixel in the browser (a canvas reads the PNG back):
the progress bar and the throughput chart must actually be painted, not only present
in the DOM.
"""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from taskmill.models import JobStatus
from tests.jobrows import make_job, make_worker
from tests.project.dashboard_tasks import stepping
from tests.project.tasks import add, always_fails

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: The colours dashboard.css paints succeeded bars and progress with (#2e7d32), failures (#c62828).
GREEN = (46, 125, 50)
RED = (198, 40, 40)

COUNT_COLOUR = """
async ([png, box, colour]) => {
  const image = new Image();
  image.src = "data:image/png;base64," + png;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width; canvas.height = image.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const data = ctx.getImageData(Math.floor(box.x), Math.floor(box.y),
                                Math.max(1, Math.floor(box.width)),
                                Math.max(1, Math.floor(box.height))).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - colour[0]) < 40 && Math.abs(data[i + 1] - colour[1]) < 40 &&
        Math.abs(data[i + 2] - colour[2]) < 40) { n++; }
  }
  return n;
}
"""


@pytest.fixture
def dashboard_url(live_server) -> str:
    return live_server.url + "/taskmill/"


@pytest.fixture
def staff_page(page, live_server, django_user_model, settings):
    """The browser, logged in as staff with ``taskmill.view_job``; the page polls fast."""
    settings.TASKMILL_DASHBOARD_POLL_INTERVAL = 0.3
    user = django_user_model.objects.create_user("watcher", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])
    return page


def painted(page, selector: str, colour: tuple[int, int, int]) -> int:
    """Pixels of ``colour`` inside the element, read from a real screenshot. Each poll
    re-renders the tables: an element seen a moment ago may be mid-replacement, so the
    screenshot and the element's box are taken again, for up to two seconds."""
    for _ in range(10):
        png = base64.b64encode(page.screenshot()).decode()
        box = page.locator(selector).first.bounding_box()
        if box:
            return page.evaluate(COUNT_COLOUR, [png, box, list(colour)])
        page.wait_for_timeout(200)
    raise AssertionError(f"{selector} is not on screen")


def total(page, name: str) -> str:
    return page.locator(f'[data-total="{name}"]').inner_text()


def test_the_dashboard_follows_jobs_as_a_worker_runs_them(staff_page, dashboard_url, start_worker,
                                                          tmp_path):
    page = staff_page
    for i in range(2):
        stepping.enqueue(f"long-{i}", steps=12, delay=0.25)
    for i in range(5):
        add.enqueue(i, i)
    always_fails.enqueue()

    page.goto(dashboard_url)
    assert total(page, "waiting") == "8"
    assert page.locator("#tm-running").inner_text().strip() == "Nothing is running."
    page.evaluate("window.__not_reloaded = true")

    start_worker("--processes", "1", "--threads", "2")

    # Running jobs appear with a live progress bar, then advance, without a reload.
    page.wait_for_selector("#tm-running progress.tm-progress", timeout=30_000)
    first = page.locator("#tm-running progress.tm-progress").first.evaluate("p => p.value")
    page.wait_for_function(
        f"() => [...document.querySelectorAll('#tm-running progress')].some(p => p.value > {first})",
        timeout=15_000)
    assert "step" in page.locator("#tm-running .tm-msg").first.inner_text()
    assert painted(page, "#tm-running progress.tm-progress", GREEN) > 20
    page.screenshot(path=str(tmp_path / "dashboard-running.png"))

    # Every outcome arrives, with the worker's host and the failing task listed.
    page.wait_for_function(
        "() => document.querySelector('[data-total=\"succeeded\"]').textContent === '7'",
        timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('[data-total=\"failed\"]').textContent === '1'",
        timeout=15_000)
    # Each figure comes from its own query, so one poll may still count the last job as
    # waiting while another already counts it finished: wait for the next poll.
    page.wait_for_function(
        "() => document.querySelector('[data-total=\"waiting\"]').textContent === '0'",
        timeout=15_000)
    assert page.evaluate("window.__not_reloaded") is True
    assert total(page, "failure_rate") == "12.5%"
    assert "tests.project.tasks.always_fails" in page.locator("#tm-failing").inner_text()
    assert "dashboard_tasks.stepping" in page.locator("#tm-slowest tr").first.inner_text()
    workers = page.locator("#tm-workers tr.tm-alive")
    assert workers.count() >= 1
    assert " ago" in workers.first.inner_text()
    assert page.locator("#tm-status").inner_text() == "● live"

    page.screenshot(path=str(tmp_path / "dashboard-done.png"), full_page=True)
    assert (tmp_path / "dashboard-done.png").stat().st_size > 10_000
    assert painted(page, "#tm-chart", GREEN) > 30
    assert painted(page, "#tm-chart", RED) > 5
    assert painted(page, ".tm-ok .tm-value", GREEN) > 10


def test_job_text_stays_text_in_the_live_page(staff_page, dashboard_url):
    page = staff_page
    attack = '<img src=x onerror="window.__pwned = 1">'
    make_job(JobStatus.RUNNING, task_path=attack, lease_owner="w:1:aa",
             progress={"current": 1, "total": 4, "message": attack})
    make_worker("w:1:aa", hostname=attack)

    page.goto(dashboard_url)
    page.wait_for_function("() => document.getElementById('tm-status').dataset.state === 'live'")
    page.wait_for_timeout(1000)  # a few polls re-render every table from JSON

    assert page.evaluate("window.__pwned") is None
    assert page.locator("#tm-running img, #tm-workers img").count() == 0
    assert attack in page.locator("#tm-running .tm-msg").inner_text()
    assert attack in page.locator("#tm-workers").inner_text()


def test_the_numbers_are_readable_with_javascript_disabled(browser, live_server, dashboard_url,
                                                           django_user_model):
    for _ in range(3):
        make_job()
    make_job(JobStatus.SUCCESSFUL, ago=60)
    user = django_user_model.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    context = browser.new_context(java_script_enabled=False)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                          "url": live_server.url}])
    page = context.new_page()
    try:
        page.goto(dashboard_url)
        assert total(page, "waiting") == "3"
        assert total(page, "succeeded") == "1"
        assert page.locator("#tm-queues").inner_text().startswith("default")
        assert painted(page, "#tm-chart", GREEN) > 5
        assert page.locator("noscript").count() == 1
    finally:
        context.close()
