"""Outbound HTTP for notifications (urllib only). Never raises; never names the URL's path or
credentials in an error (webhook and ping URLs are tokens)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from vigo import __version__

TIMEOUT = 5.0  # seconds for one request: a notification must never hold a run up for long


def where(url: str) -> str:
    """The part of a URL that is safe to print: scheme and host."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or '?'}"
    except ValueError:
        return "an invalid URL"


def send(method: str, url: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> str:
    """One request; '' when the server answered 2xx, else why not."""
    import urllib.error  # here, not at the top: urllib.request pulls in ssl, http.client and
    import urllib.request  # email, ~11 ms on every run; only runs that notify pay for it

    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"User-Agent": f"vigo/{__version__}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(4096)
            return ""
    except urllib.error.HTTPError as exc:
        return f"{where(url)} answered HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return f"cannot reach {where(url)}: {exc.reason}"
    except (OSError, ValueError) as exc:  # timeouts, resets, bad header values
        return f"cannot reach {where(url)}: {exc or type(exc).__name__}"
