"""``keep_alive``: how long an idle model stays loaded. Seconds (a number), a duration string
(``"90s"``, ``"5m"``, ``"1h"``), ``-1`` for ever, or ``0`` to unload right after the request,
as Ollama's option of the same name."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

FOREVER = -1.0
#: The longest finite keep_alive: a year. Longer is refused (use -1).
MAX_SECONDS = 365 * 24 * 3600.0
_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: object) -> float:
    """Seconds, or ``FOREVER``. Raises ``ValueError`` with what is accepted."""
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a number of seconds or a duration such as '5m'")
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= 24 and (match := _DURATION.fullmatch(text)):
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        else:
            try:
                seconds = float(text) if len(text) <= 24 else math.nan
            except ValueError:
                seconds = math.nan
            if math.isnan(seconds):
                raise ValueError("keep_alive must be seconds (-1: for ever, 0: unload after "
                                 "the request) or a duration such as '90s', '5m', '1h'")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        raise ValueError("keep_alive must be a number of seconds or a duration such as '5m'")
    if seconds == FOREVER:
        return FOREVER
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_SECONDS:
        raise ValueError(f"keep_alive must be -1 (for ever), 0, or up to {MAX_SECONDS:.0f} "
                         "seconds (a year)")
    return seconds


KeepAlive = Annotated[float, BeforeValidator(parse_keep_alive), WithJsonSchema({
    "anyOf": [{"type": "number", "minimum": -1, "maximum": MAX_SECONDS},
              {"type": "string", "pattern": r"^\d{1,9}(\.\d{1,6})?(ms|s|m|h)$"}]})]
