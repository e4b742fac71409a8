"""Cloud Storage failures as one-line errors that name the path and say what to fix.

The client library (and Beam's GCS IO on top of it) has already retried what
it retries, 408, 429 and 5xx, by the time an error gets here; `guard` wraps a
storage call, `describe` is the pure mapping from an error to the message.
Before the first call, gcs_preflight checks the endpoint and the credentials:
without them the client's retries would take minutes to fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from nextword.storage import gcs_preflight


class StorageError(OSError):
    """A Cloud Storage failure on one path, on one line."""


def _http_status(err: BaseException | None) -> int | None:
    """The HTTP status inside a google-cloud-storage or Beam error, however deeply wrapped."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = getattr(err, "code", None)  # google.api_core exceptions
        if isinstance(code, int) and 100 <= code < 600:
            return code
        status = getattr(getattr(err, "response", None), "status_code", None)  # upload errors
        if isinstance(status, int):
            return status
        details = getattr(err, "exception_details", None)  # Beam's BeamIOError: {path: error}
        if isinstance(details, dict) and details:
            err = next(iter(details.values()))
            continue
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__  # RetryError.cause
    return None


def _bucket(path: str) -> str:
    return path.split("://", 1)[1].split("/", 1)[0]


def describe(err: BaseException, path: str, action: str, bucket_exists: bool | None = None) -> OSError:
    """A one-line error for a failed Cloud Storage `action` ("read", "write", ...) on `path`."""
    status = _http_status(err)
    bucket = _bucket(path)
    if status == 404 and bucket_exists is False:
        return FileNotFoundError(
            f"{path}: bucket gs://{bucket} does not exist; create it "
            f"(gcloud storage buckets create gs://{bucket}) or fix the path"
        )
    if status == 404:
        return FileNotFoundError(f"{path}: no such object in gs://{bucket}")
    if status in (401, 403):
        return PermissionError(
            f"{path}: permission denied to {action} (HTTP {status}); grant the job's service account "
            f"access to gs://{bucket} (e.g. roles/storage.objectAdmin)"
        )
    if type(err).__name__ == "RefreshError":  # google.auth's: the credentials found were refused or expired
        return PermissionError(
            f"{path}: the Google Cloud credentials were refused ({_first_line(err)}); run "
            "`gcloud auth application-default login` again, or check GOOGLE_APPLICATION_CREDENTIALS"
        )
    if status in (408, 429) or (status or 0) >= 500:
        return StorageError(
            f"{path}: Cloud Storage failed to {action} (HTTP {status}) after the client's retries; "
            "rerun when the service recovers"
        )
    return StorageError(f"{path}: could not {action} ({type(err).__name__}: {_first_line(err)})")


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _bucket_exists(path: str) -> bool | None:
    from apache_beam.io.gcp import gcsio

    try:
        return gcsio.GcsIO().get_bucket(_bucket(path)) is not None
    except Exception:  # only refines the message of an error already being raised
        return None


@contextlib.contextmanager
def guard(path: str, action: str) -> Iterator[None]:
    """Turns a Cloud Storage failure inside the block into a one-line error naming `path`."""
    if path.startswith("gs://"):
        gcs_preflight.check(path)
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        if not path.startswith("gs://") or isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        status = _http_status(err)
        if status is None and not _is_gcs_error(err):
            raise
        raise describe(err, path, action, _bucket_exists(path) if status == 404 else None) from err


def _is_gcs_error(err: BaseException) -> bool:
    """Errors of Beam's GCS IO, the client library, its HTTP transport and its credentials."""
    import requests
    from apache_beam.io.filesystem import BeamIOError
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    kinds = (BeamIOError, api_exceptions.GoogleAPIError, requests.RequestException, auth_exceptions.GoogleAuthError)
    return isinstance(err, kinds)
