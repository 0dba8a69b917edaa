"""Start a rebuild from a form, then watch it: a status page and the JSON it polls.

The other forms of the page start the small jobs that show the operations side (the
admin's job list, the live dashboard); the page lists the ones this browser started.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from taskmill import get_batch
from taskmill.compat import TaskResultDoesNotExist, TaskResultStatus

from .feeds import supplier_name
from .forms import ImportFeedForm, RebuildForm
from .models import IndexEntry, Product, Rebuild
from .tasks import (
    import_supplier_feed,
    publish_to_marketplace,
    rebuild_index,
    refresh_prices,
    send_weekly_digest,
)

FINISHED = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}

#: The session key of the jobs this browser started from the page, newest first.
STARTED = "catalog_started_jobs"
#: The tasks of the jobs the page lists (batches are listed as batches).
LISTED_TASKS = {"publish": publish_to_marketplace, "import": import_supplier_feed}


def index(request: HttpRequest) -> HttpResponse:
    form = RebuildForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = rebuild_index.enqueue(slowdown_ms=form.cleaned_data["slowdown_ms"],
                                       fail=form.cleaned_data["fail"])
        _, created = Rebuild.objects.get_or_create(result_id=result.id)
        if not created:
            # unique=True: the running rebuild came back instead of a second one.
            messages.info(request, "A rebuild is already under way; here it is.")
        return redirect("rebuild", result_id=result.id)
    rebuilds = [(rebuild, _result(rebuild.result_id)) for rebuild in Rebuild.objects.all()[:5]]
    return render(request, "catalog/index.html", {
        "form": form,
        "import_form": ImportFeedForm(),
        "products": Product.objects.count(),
        "entries": IndexEntry.objects.count(),
        "rebuilds": rebuilds,
        "started": [_started_row(entry) for entry in request.session.get(STARTED, [])],
        "digest_every": f"{settings.TASKMILL_SCHEDULE['weekly-digest']['every']:g}",
        "digest_task": send_weekly_digest.module_path,
    })


@require_POST
def publish(request: HttpRequest) -> HttpResponse:
    result = publish_to_marketplace.enqueue()
    _remember(request, "publish", result.id, "Publish to the marketplace")
    messages.info(request, "Publishing to the marketplace: its first attempt times out, "
                           "the retry succeeds.")
    return redirect("index")


@require_POST
def import_feed(request: HttpRequest) -> HttpResponse:
    form = ImportFeedForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the supplier feeds.")
        return redirect("index")
    supplier = form.cleaned_data["supplier"]
    result = import_supplier_feed.enqueue(supplier)
    _remember(request, "import", result.id, f"Import the {supplier_name(supplier)} feed")
    messages.info(request, f"Importing the {supplier_name(supplier)} feed.")
    return redirect("index")


@require_POST
def refresh(request: HttpRequest) -> HttpResponse:
    batch = refresh_prices()
    _remember(request, "batch", batch.id, f"Refresh prices ({batch.total} categories)")
    messages.info(request, f"Refreshing prices: a batch of {batch.total} jobs, one per "
                           "category, then a report.")
    return redirect("index")


def _remember(request: HttpRequest, kind: str, job_id: str, label: str) -> None:
    started = [{"kind": kind, "id": job_id, "label": label}, *request.session.get(STARTED, [])]
    request.session[STARTED] = started[:8]


def _started_row(entry: dict[str, str]) -> dict[str, Any]:
    """What the page shows of a job (or batch) it started, with its page in the admin."""
    row: dict[str, Any] = {"label": entry["label"], "status": "pruned", "detail": "",
                           "admin_url": None}
    try:
        if entry["kind"] == "batch":
            batch = get_batch(entry["id"])
            row["admin_url"] = reverse("admin:taskmill_batch_change", args=[batch.id])
            row["status"] = "FINISHED" if batch.finished else "RUNNING"
            row["detail"] = f"{batch.succeeded} succeeded, {batch.failed} failed of {batch.total}"
            if batch.then_result_id:
                row["detail"] += "; report enqueued"
        else:
            result = LISTED_TASKS[entry["kind"]].get_result(entry["id"])
            row["admin_url"] = reverse("admin:taskmill_job_change", args=[result.id])
            row["status"] = str(result.status)
            row["detail"] = (f"attempt {result.attempts}, {len(result.errors)} error(s)"
                             if result.attempts else "waiting for a worker")
    except (ObjectDoesNotExist, TaskResultDoesNotExist, KeyError):
        pass  # Pruned since, or a session from another version of the page.
    return row


def rebuild(request: HttpRequest, result_id: str) -> HttpResponse:
    result = _result(result_id)
    if result is None:
        raise Http404("No such rebuild")
    return render(request, "catalog/rebuild.html", {"result_id": result_id,
                                                    "state": state_of(result)})


@require_GET
def rebuild_status(request: HttpRequest, result_id: str) -> JsonResponse:
    result = _result(result_id)
    if result is None:
        raise Http404("No such rebuild")
    return JsonResponse(state_of(result))


def state_of(result: Any) -> dict[str, Any]:
    """What the status page shows, as JSON."""
    progress = result.progress
    percent = 0
    if progress is not None and progress.total:
        percent = round(100 * progress.current / progress.total)
    if result.status == TaskResultStatus.SUCCESSFUL:
        percent = 100
    error = ""
    if result.status == TaskResultStatus.FAILED and result.errors:
        last = result.errors[-1]
        # The exception's own line ("module.Class: message"), not the frames above it.
        lines = [line for line in last.traceback.splitlines()
                 if line.startswith(last.exception_class_path)]
        error = lines[-1] if lines else last.exception_class_path
    return {
        "id": result.id,
        "status": str(result.status),
        "finished": result.status in FINISHED,
        "percent": percent,
        "current": progress.current if progress else 0,
        "total": progress.total if progress else None,
        "message": progress.message if progress else "Waiting for a worker",
        "result": result.return_value if result.status == TaskResultStatus.SUCCESSFUL else None,
        "error": error,
    }


def _result(result_id: str) -> Any:
    try:
        return rebuild_index.get_result(result_id)
    except TaskResultDoesNotExist:
        return None
