"""PGD presets and budget parsing: the names ``immunize --help`` lists, without torch (attacks.py uses them)."""

from __future__ import annotations

from typing import Any

from confidently.errors import UsageError

PRESETS: dict[str, dict[str, Any]] = {
    # thesis Table D.2 (both attacks)
    "thesis": {"eps": 16 / 255, "step": 2 / 255, "steps": 200, "random_start": False, "step_schedule": "constant"},
    # reference notebooks / demo, converted from the [-1, 1] scale (÷2), all with random start and linear decay
    "photoguard-img2img": {"eps": 0.03, "step": 0.01, "steps": 1000, "random_start": True,
                           "step_schedule": "linear"},
    "photoguard-inpaint": {"eps": 0.03, "step": 0.005, "steps": 1000, "random_start": True,
                           "step_schedule": "linear"},
    "photoguard-demo": {"eps": 0.06, "step": 0.005, "steps": 200, "random_start": True, "step_schedule": "linear"},
}
SCHEDULES = ("constant", "linear")


def parse_fraction(text: str | float, flag: str = "--eps") -> float:
    """``16/255``, ``0.0627`` or a float."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            return float(top) / float(bottom)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{flag} {text!r}: expected a number or a fraction such as 16/255") from None
