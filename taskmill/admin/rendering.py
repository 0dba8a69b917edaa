"""Job fields as HTML: progress bars and JSON, always escaped (they are task output)."""

from __future__ import annotations

import json
from typing import Any

from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString


def progress_bar(progress: Any) -> SafeString | str:
    """A ``<progress>`` bar with the job's own message (escaped: it is task output)."""
    if not isinstance(progress, dict):
        return "–"
    current, total = progress.get("current") or 0, progress.get("total")
    message = str(progress.get("message") or "")
    if total:
        fraction = max(0.0, min(1.0, float(current) / float(total)))
        return format_html(
            '<progress class="taskmill-progress" value="{}" max="1" title="{}">{}%</progress> '
            "<span>{}%</span> <span>{}</span>",
            f"{fraction:.4f}", f"{current:g} / {total:g}", f"{fraction * 100:.0f}",
            f"{fraction * 100:.0f}", message,
        )
    return format_html("<span>{}</span> <span>{}</span>", f"{current:g}", message)


def json_block(value: Any) -> SafeString:
    """A JSON value as escaped, preformatted text: job arguments are never HTML."""
    return format_html('<pre class="taskmill-json">{}</pre>',
                       json.dumps(value, indent=2, sort_keys=True, default=str))


def change_link(url_name: str, pk: object) -> SafeString | str:
    """A link to another admin page (``admin:<url_name>``), or a dash when there is none."""
    if pk is None:
        return "–"
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{url_name}", args=[pk]), pk)
