"""Checks, once per process and before the first Cloud Storage call, that a call can succeed at all.

Without them the libraries wait long before failing: Beam looks up credentials
five times with backoff (logging a traceback each time) and then goes on
anonymously, and the client retries a refused connection for two minutes before
raising a RetryError that says only that time ran out. Here a missing credential or
an endpoint nobody answers on is one line within seconds, naming what to fix.
Errors on the way (HTTP statuses, a connection lost midway) are left to the
client's retries and to gcs_errors.describe.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"  # google-cloud-storage's: the emulator's address
CONNECT_TIMEOUT_S = 5.0
_PUBLIC_ENDPOINT = "https://storage.googleapis.com"

_checked = threading.Event()
_lock = threading.Lock()


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)


def endpoint() -> tuple[str, int, str]:
    """(host, port, description) of the first hop of Cloud Storage calls: the emulator's address if set,
    else Cloud Storage's; the HTTP proxy the environment names for it, if any (the client goes through it)."""
    emulator = os.environ.get(EMULATOR_VARIABLE, "")
    url = emulator if "://" in emulator else f"http://{emulator}" if emulator else _PUBLIC_ENDPOINT
    where = f"the Cloud Storage emulator at {emulator} ({EMULATOR_VARIABLE})" if emulator else "Cloud Storage"
    host, port = _host_port(url)
    proxy = urllib.request.getproxies_environment().get(urllib.parse.urlsplit(url).scheme)
    if proxy and not urllib.request.proxy_bypass_environment(host):
        return (*_host_port(proxy), f"the proxy {proxy} to {where}")
    return host, port, where


def unreachable(host: str, port: int) -> str:
    """Why a TCP connection to host:port fails ("connection refused", ...), or "" when it opens."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return ""
    except socket.gaierror as err:
        return f"cannot resolve {host} ({err.strerror})"
    except TimeoutError:
        return f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    except OSError as err:
        return (err.strerror or type(err).__name__).lower()


def _credentials_missing() -> str:
    """Why no Application Default Credentials are found ("" when they are)."""
    import google.auth
    from google.auth import exceptions

    try:
        google.auth.default()
    except exceptions.DefaultCredentialsError as err:
        return str(err).split(". ")[0].rstrip(".")
    return ""


def _connect_anonymously() -> None:
    """Tells Beam there are no credentials, as its own lookup would conclude after its retries (an emulator
    needs none). Beam keeps the answer for the process in this class; a Beam without it only looks them up."""
    from apache_beam.internal.gcp import auth

    cache = getattr(auth, "_Credentials", None)
    if cache is not None and hasattr(cache, "_credentials_init"):
        with cache._credentials_lock:
            cache._credentials, cache._credentials_init = None, True


def check(path: str) -> None:
    """Raises one line naming `path` and the fix if Cloud Storage cannot be reached or no credentials are
    found; checked once per process (a failure is checked again on the next call)."""
    if _checked.is_set():
        return
    with _lock:
        if _checked.is_set():
            return
        host, port, where = endpoint()
        why = unreachable(host, port)
        if why:
            fix = (
                f"start the emulator or unset {EMULATOR_VARIABLE}"
                if os.environ.get(EMULATOR_VARIABLE)
                else "check the network connection and any proxy settings (https_proxy)"
            )
            raise ConnectionError(f"{path}: cannot reach {where}: {why}; {fix}")
        missing = _credentials_missing()
        if missing and os.environ.get(EMULATOR_VARIABLE):
            _connect_anonymously()
        elif missing:
            raise PermissionError(
                f"{path}: no Google Cloud credentials ({missing}); run `gcloud auth application-default login`, "
                "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
            )
        _checked.set()
