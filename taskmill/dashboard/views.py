"""The dashboard page and the JSON it polls.

Both need an active staff user with ``taskmill.view_job``. The page is rendered with the
data already in it (readable with JavaScript off); ``dashboard.js`` then replaces the
numbers from ``dashboard.json`` every few seconds, writing text only (never HTML), so
nothing a task put in its progress message or arguments can run in the browser.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from ..backend import TaskmillBackend, taskmill_backends
from ..flow import paused
from ..reporting import dashboard_snapshot

#: Seconds between two polls of the page, unless ``TASKMILL_DASHBOARD_POLL_INTERVAL`` says.
POLL_INTERVAL = 2.0
PERMISSION = "taskmill.view_job"

View = Callable[..., HttpResponse]


def _login_url() -> str:
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        return str(settings.LOGIN_URL)


def staff_view(*, json: bool) -> Callable[[View], View]:
    """Active staff with ``taskmill.view_job`` only.

    The page sends others to the login page (like the admin); the JSON answers 403, so a
    poll from an expired session fails visibly instead of receiving a login page.
    """

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            is_staff = user.is_authenticated and user.is_active and user.is_staff
            if not is_staff:
                if json:
                    return JsonResponse({"error": "staff login required"}, status=403)
                return redirect_to_login(request.get_full_path(), _login_url())
            if not user.has_perm(PERMISSION):
                if json:
                    return JsonResponse({"error": f"needs the {PERMISSION} permission"},
                                        status=403)
                return HttpResponse("You need the taskmill.view_job permission.",
                                    status=403, content_type="text/plain")
            return view(request, *args, **kwargs)

        return require_safe(never_cache(wrapped))

    return decorate


def _backend(request: HttpRequest) -> TaskmillBackend:
    """The backend named by ``?backend=``, or the default taskmill backend."""
    backends = taskmill_backends()
    alias = request.GET.get("backend")
    if alias is None:
        alias = "default" if "default" in backends else next(iter(backends), None)
    if alias not in backends:
        raise Http404("No such taskmill backend.")
    return backends[alias]


def snapshot(backend: TaskmillBackend) -> dict[str, Any]:
    data = dashboard_snapshot(backend.database, lease_seconds=backend.config.lease_seconds)
    data["paused"] = [str(p) for p in paused() if p.database == backend.database]
    return data


@staff_view(json=False)
def dashboard(request: HttpRequest) -> HttpResponse:
    backend = _backend(request)
    data = snapshot(backend)
    data_url = reverse("taskmill:dashboard-data")
    if "backend" in request.GET:
        data_url += f"?backend={backend.alias}"
    return render(request, "taskmill/dashboard.html", {
        "data": data,
        "chart": chart_bars(data["throughput"]),
        "backend_alias": backend.alias,
        "data_url": data_url,
        "poll_interval": int(1000 * getattr(settings, "TASKMILL_DASHBOARD_POLL_INTERVAL",
                                            POLL_INTERVAL)),
    })


@staff_view(json=True)
def dashboard_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(snapshot(_backend(request)))


#: The chart's drawing area (SVG user units); dashboard.js uses the same numbers.
CHART_WIDTH, CHART_HEIGHT = 600, 120


def chart_bars(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stacked bars (succeeded below, failed on top) per minute, for the first paint."""
    if not points:
        return []
    peak = max(max(p["succeeded"] + p["failed"] for p in points), 1)
    step = CHART_WIDTH / len(points)
    bars = []
    for i, point in enumerate(points):
        ok = point["succeeded"] / peak * CHART_HEIGHT
        bad = point["failed"] / peak * CHART_HEIGHT
        bars.append({
            "x": round(i * step, 2), "width": round(max(step - 2, 1), 2),
            "ok_y": round(CHART_HEIGHT - ok, 2), "ok_h": round(ok, 2),
            "bad_y": round(CHART_HEIGHT - ok - bad, 2), "bad_h": round(bad, 2),
            "title": f"{point['minute'][11:16]} UTC: {point['succeeded']} succeeded, "
                     f"{point['failed']} failed",
        })
    return bars
