"""Passwords and tokens in URIs, masked wherever text is printed or stored."""
from __future__ import annotations

import re

_USER_AND_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]+):[^@\s/]+@")
_TOKEN_AS_USER = re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^/\s:@]+@")
_SECRET_QUERY_VALUE = re.compile(r"([?&](?:[^=&\s#]*(?:token|password|passwd|secret|key|auth)[^=&\s#]*)=)[^&\s#]+", re.I)


def mask_secrets(text: str) -> str:
    """text with every URI's password (user:***@), bare token (***@) and secret query value (token=***) masked."""
    text = _USER_AND_PASSWORD.sub(r"\1:***@", text)
    text = _TOKEN_AS_USER.sub(r"\1***@", text)
    return _SECRET_QUERY_VALUE.sub(r"\1***", text)
