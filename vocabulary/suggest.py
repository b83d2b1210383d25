"""'Did you mean': the allowed name nearest a mistyped one (difflib), for the sentence that refuses it."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(value, allowed: Iterable) -> str:
    """' (did you mean 'x'?)' naming the allowed name closest to value, or '' when none is close (or
    value is allowed: the sentence is about something else)."""
    names = [str(a) for a in allowed]
    if str(value) in names:
        return ""
    close = difflib.get_close_matches(str(value), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
