"""Rate limits as written in task options: ``"100/m"`` is at most 100 starts a minute."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The periods a rate may name, in seconds.
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}

_RATE = re.compile(r"^\s*(?P<limit>\d+)\s*/\s*(?P<period>[a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    period: float

    def __str__(self) -> str:
        unit = next(u for u, seconds in PERIODS.items() if seconds == self.period)
        return f"{self.limit}/{unit}"


def parse_rate(text: object) -> Rate:
    """``"N/s"``, ``"N/m"`` or ``"N/h"`` as a :class:`Rate`; ValueError saying what is
    accepted otherwise (``"100/fortnight"``, ``"0/s"``, ``"ten/m"``)."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or match["period"] not in PERIODS or int(match["limit"]) < 1:
        raise ValueError(
            f"rate_limit must look like '100/s', '100/m' or '100/h' (a whole number of "
            f"starts, at least 1, per second, minute or hour), not {text!r}.")
    return Rate(int(match["limit"]), PERIODS[match["period"]])
