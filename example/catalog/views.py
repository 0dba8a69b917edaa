"""Start a rebuild from a form, then watch it: a status page and the JSON it polls."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from taskmill.compat import TaskResultDoesNotExist, TaskResultStatus

from .forms import RebuildForm
from .models import IndexEntry, Product, Rebuild
from .tasks import rebuild_index

FINISHED = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}


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
        "products": Product.objects.count(),
        "entries": IndexEntry.objects.count(),
        "rebuilds": rebuilds,
    })


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
