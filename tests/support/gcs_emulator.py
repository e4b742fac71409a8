"""A real Cloud Storage emulator process for tests, and a fault-injecting loopback proxy in front of it.

`GcsEmulator` runs `gcp-storage-emulator` (in memory) on 127.0.0.1 and points
every client in this process at it:

* google-cloud-storage, and Beam's GCS IO which uses it, read `STORAGE_EMULATOR_HOST`.
* Beam first looks up Application Default Credentials and, when there are
  none, retries for 25-40 s before connecting anonymously.
  `GOOGLE_APPLICATION_CREDENTIALS` therefore names an offline `authorized_user`
  file whose access token never expires: the lookup succeeds at once, no token
  refresh ever goes out, and Beam takes its normal authenticated path (the
  emulator ignores the token).
* TensorFlow's own GCS filesystem always calls https://www.googleapis.com, but
  its libcurl honours `https_proxy` and `CURL_CA_BUNDLE`, and it takes its
  token from `GOOGLE_AUTH_TOKEN_FOR_TESTING`. The proxy accepts CONNECT for
  those hosts, terminates TLS with a throwaway certificate that only this
  test session trusts, and forwards the requests to the emulator. TF's real
  gs:// code (tf.data, tf.io.gfile, checkpoints, SavedModel) then runs against
  the emulator and nothing leaves 127.0.0.1.

The proxy runs in its own process: TensorFlow's GCS calls hold the GIL, so a
proxy thread in the test process would never get to answer. It also injects
HTTP errors (403, 503, ...) by method and path, which the emulator cannot do;
tests set them through its control endpoint (`FaultProxy.fail`) and read which
requests came and which faults were met. It papers over one emulator gap: an
empty `uploadType=media` upload (TF's "dir/" markers) crashes the emulator, so
the proxy sends the same empty object as a multipart upload.

`python tests/support/gcs_emulator.py proxy ...` is the proxy process's entry point.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

# TensorFlow's GCS filesystem: JSON API and uploads on www., object reads on storage.
TF_GCS_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
_CONTROL = "/__proxy__/"
_BOUNDARY = "nextword-test-proxy"
# Hop-by-hop headers belong to one connection; the proxy never forwards them.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def object_names(folder: str) -> list[str]:
    """The names, relative to `folder` (gs://BUCKET/PREFIX), of every object under it, sorted."""
    from google.cloud import storage as gcs

    bucket, _, prefix = folder[len("gs://") :].partition("/")
    prefix = prefix.rstrip("/") + "/"
    return sorted(b.name[len(prefix) :] for b in gcs.Client().list_blobs(bucket, prefix=prefix) if b.name != prefix)


def _http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _wait_ready(port: int, path: str, process: subprocess.Popen, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            if _http(port, "GET", path)[0] == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} on 127.0.0.1:{port} did not answer within {timeout_s} s")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux), so nothing is left running."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_offline_adc(path: Path) -> Path:
    """Application Default Credentials that are valid offline (never refreshed)."""
    info = {
        "type": "authorized_user",
        "client_id": "emulator",
        "client_secret": "emulator",
        "refresh_token": "emulator",
        "token": "emulator-token",
        "expiry": "2999-01-01T00:00:00Z",
    }
    path.write_text(json.dumps(info))
    return path


def write_self_signed_cert(directory: Path, hosts: tuple[str, ...]) -> tuple[Path, Path]:
    """(certificate, key) PEM files for `hosts`; the certificate is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "proxy-cert.pem", directory / "proxy-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


# --- the proxy process --------------------------------------------------------
class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer
    tls = False

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK stall every response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        del format, args  # quiet: a failing test shows the requests it needs

    def do_CONNECT(self):
        host = self.path.split(":", 1)[0]
        if host not in TF_GCS_HOSTS:
            self.send_error(403, f"the test proxy only intercepts {', '.join(TF_GCS_HOSTS)}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        # From here on the same handler reads the client's requests inside TLS.
        self.connection = self.server.tls_context.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")  # buffered: read(n) returns all n bytes
        self.wfile = self.connection.makefile("wb", buffering=0)
        self.tls = True
        self.close_connection = False

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self):
        body = self._body()
        path = self.path
        if path.startswith(("http://", "https://")):
            path = "/" + path.split("/", 3)[3]
        if path.startswith(_CONTROL) and not self.tls:
            self._control(path[len(_CONTROL) :], body)
            return
        status = self.server.take_fault(self.command, path)
        if status is not None:
            error = {"error": {"code": status, "message": f"injected by the test proxy (HTTP {status})"}}
            self._reply(status, {"Content-Type": "application/json"}, json.dumps(error).encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.command == "POST" and not body and "uploadType=media" in path:
            path, body, headers["Content-Type"] = _empty_media_as_multipart(path)
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection("127.0.0.1", self.server.target_port, timeout=120)
        try:
            conn.request(self.command, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
        finally:
            conn.close()
        if self.tls and "Location" in out:
            # The emulator builds links from the Host header with http://; TF must stay on https.
            out["Location"] = out["Location"].replace("http://", "https://", 1)
        self._reply(response.status, out, data)

    def _control(self, command: str, body: bytes):
        if command == "faults" and self.command == "POST":
            self.server.set_faults(json.loads(body))
            self._reply(200, {}, b"{}")
        elif command in ("requests", "hits"):
            value = self.server.seen() if command == "requests" else self.server.hits()
            self._reply(200, {"Content-Type": "application/json"}, json.dumps(value).encode())
        else:
            self._reply(404, {}, b"")

    def _reply(self, status: int, headers: dict, data: bytes):
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


def _empty_media_as_multipart(path: str) -> tuple[str, bytes, str]:
    """The same empty-object upload in the multipart form: the emulator fails on an empty media upload.

    TensorFlow creates its directory markers ("dir/" objects) this way.
    """
    name = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["name"][0]
    meta = json.dumps({"name": name})
    body = (
        f"--{_BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{meta}\r\n"
        f"--{_BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--{_BOUNDARY}--\r\n"
    )
    path = path.replace("uploadType=media", "uploadType=multipart")
    return path, body.encode(), f"multipart/related; boundary={_BOUNDARY}"


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, target_port: int, tls_context: ssl.SSLContext):
        super().__init__(("127.0.0.1", port), _ProxyHandler)
        self.target_port = target_port
        self.tls_context = tls_context
        self._faults: list[dict] = []
        self._requests: list[list[str]] = []
        self._lock = threading.Lock()

    def set_faults(self, faults: list[dict]) -> None:
        with self._lock:
            self._faults = [dict(f, hits=0) for f in faults]
            self._requests = []

    def seen(self) -> list[list[str]]:
        with self._lock:
            return list(self._requests)

    def hits(self) -> list[int]:
        with self._lock:
            return [fault["hits"] for fault in self._faults]

    def take_fault(self, method: str, path: str) -> int | None:
        """The status of the first fault that matches and has uses left, else None (forward)."""
        with self._lock:
            self._requests.append([method, path])
            for fault in self._faults:
                if fault["method"] not in ("*", method) or not re.search(fault["path"], path):
                    continue
                if fault["times"] is not None and fault["hits"] >= fault["times"]:
                    continue
                fault["hits"] += 1
                return fault["status"]
        return None


def _serve_proxy(argv: list[str]) -> None:
    args = argparse.ArgumentParser(prog="gcs_emulator.py proxy")
    args.add_argument("--port", type=int, required=True)
    args.add_argument("--target-port", type=int, required=True)
    args.add_argument("--cert", required=True)
    args.add_argument("--key", required=True)
    opts = args.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(opts.cert, opts.key)
    _ProxyServer(opts.port, opts.target_port, context).serve_forever()


# --- the test side ------------------------------------------------------------
class FaultProxy:
    """Handle on the proxy process: where it listens, which errors it injects, what it saw."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def fail(self, *faults: tuple[str, str, int, int | None]) -> None:
        """Replaces the injected faults: (method or '*', path regex, HTTP status, times or None)."""
        payload = [{"method": m, "path": p, "status": s, "times": t} for m, p, s, t in faults]
        status, _ = _http(self.port, "POST", _CONTROL + "faults", json.dumps(payload).encode())
        if status != 200:
            raise RuntimeError(f"test proxy refused the faults (HTTP {status})")

    def clear(self) -> None:
        self.fail()

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request since the last fail()/clear()."""
        return [tuple(r) for r in json.loads(_http(self.port, "GET", _CONTROL + "requests")[1])]

    def hits(self) -> list[int]:
        """How many requests each fault of the last fail() answered, in its order."""
        return json.loads(_http(self.port, "GET", _CONTROL + "hits")[1])


class GcsEmulator:
    """The emulator and proxy processes, and the environment that points clients at them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proxy = FaultProxy(free_port())
        self._processes: list[subprocess.Popen] = []
        self._saved_env: dict[str, str | None] = {}

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        with open(self.workdir / log_name, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        self._processes.append(process)
        return process

    def start(self) -> GcsEmulator:
        emulator = self._spawn(
            ["-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(self.port), "--in-memory",
             "-q"], "emulator.log",
        )  # fmt: skip
        cert, key = write_self_signed_cert(self.workdir, TF_GCS_HOSTS)
        # -P: tests/support/ stays off the proxy's sys.path (its trainer.py would shadow the package).
        proxy = self._spawn(
            ["-P", __file__, "proxy", "--port", str(self.proxy.port), "--target-port", str(self.port),
             "--cert", str(cert), "--key", str(key)], "proxy.log",
        )  # fmt: skip
        _wait_ready(self.port, "/", emulator, "storage emulator")
        _wait_ready(self.proxy.port, _CONTROL + "requests", proxy, "test proxy")
        self._set_env({
            # Through the proxy (which forwards everything until a test injects a fault), so the
            # links the emulator hands out (uploads, downloads) lead back through it as well.
            "STORAGE_EMULATOR_HOST": self.proxy.url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(write_offline_adc(self.workdir / "adc.json")),
            "GOOGLE_CLOUD_PROJECT": "emulator-project",
            "NO_GCE_CHECK": "true",
            # TensorFlow's GCS filesystem (libcurl): through the proxy, trusting only its certificate.
            "https_proxy": self.proxy.url,
            # ...but never loopback traffic: gRPC honours https_proxy too, and Beam's multi-processing
            # workers reach their runner on localhost (through the proxy they would hang).
            "no_proxy": "localhost,127.0.0.1,::1",
            "NO_PROXY": "localhost,127.0.0.1,::1",
            "CURL_CA_BUNDLE": str(cert),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator-token",
        })  # fmt: skip
        return self

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def client(self):
        from google.cloud import storage

        return storage.Client()

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(name)
        return f"gs://{name}"

    def stop(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for process in reversed(self._processes):
            _stop(process)


if __name__ == "__main__" and sys.argv[1:2] == ["proxy"]:
    _serve_proxy(sys.argv[2:])
