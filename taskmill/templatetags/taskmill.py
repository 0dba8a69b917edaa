"""Filters for the dashboard's first paint; ``dashboard.js`` formats the same way."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def age(seconds: float | None) -> str:
    """Seconds as a short human duration: ``4.2s``, ``17m``, ``3.1h``."""
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@register.filter
def percent(fraction: float | None) -> str:
    if fraction is None:
        return "–"
    return f"{float(fraction) * 100:.1f}%"
