"""Real network pieces for the tests, all on 127.0.0.1: an nginx reverse proxy started from the
test, a small forward proxy that counts what passes through it, and certificates of a private CA.

Nothing here ever connects to an address that is not loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import shutil
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import trustme

__all__ = [
    "NGINX",
    "Certificates",
    "ForwardProxy",
    "Nginx",
    "ProxiedRequest",
    "free_port",
]

_START_TIMEOUT = 10.0  # seconds nginx gets to listen
_STOP_TIMEOUT = 5.0  # seconds nginx gets to exit before it is killed
_HEAD_LIMIT = 64 * 1024  # bytes of a request or response head the proxy reads at most


def _find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(path, os.X_OK):
            return path
    return None


#: The nginx binary, or ``None`` when nginx is not installed.
NGINX = _find_nginx()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _wait_listening(port: int, alive: Callable[[], bool], timeout: float) -> bool:
    """Poll until something accepts connections on 127.0.0.1:``port`` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and alive():
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def _terminate(process: asyncio.subprocess.Process | None) -> None:
    """SIGTERM, then SIGKILL if it is still there after a few seconds (bounded)."""
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)


# -- nginx ------------------------------------------------------------------------------------

_NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_connect_timeout {connect_timeout};
            proxy_send_timeout {read_timeout};
            proxy_read_timeout {read_timeout};
        }}
    }}
}}
"""


class Nginx:
    """nginx as a reverse proxy in front of ``127.0.0.1:upstream_port``, run from a test.

    One process (``master_process off``: nothing is left behind when it is killed), its
    config, pid, logs and temporary files under ``directory``; it listens on the same
    127.0.0.1 port across restarts. ``read_timeout`` is nginx's ``proxy_read_timeout``: an
    upstream that answers later gets a 504 from nginx; one that refuses connections, a 502.

    Raises:
        RuntimeError: nginx is not installed, or did not start.
    """

    def __init__(
        self,
        directory: Path,
        upstream_port: int,
        *,
        read_timeout: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        self.directory = directory
        self.port = free_port()
        self.upstream_port = upstream_port
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def __aenter__(self) -> Nginx:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start nginx and wait (bounded) until it listens."""
        assert NGINX is not None
        if self._process is not None:
            raise RuntimeError("nginx already runs")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(
                dir=self.directory,
                port=self.port,
                upstream=self.upstream_port,
                connect_timeout=f"{round(self.connect_timeout * 1000)}ms",
                read_timeout=f"{round(self.read_timeout * 1000)}ms",
            )
        )
        process = await asyncio.create_subprocess_exec(
            NGINX,
            "-p",
            str(self.directory),
            "-c",
            str(conf),
            "-e",
            str(self.directory / "error.log"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._process = process
        if not await _wait_listening(self.port, lambda: process.returncode is None, _START_TIMEOUT):
            await self.stop()
            raise RuntimeError(f"nginx did not start; its error log:\n{self.error_log}")
        self.starts += 1

    async def kill(self) -> None:
        """SIGKILL: its connections are cut at once, as when a proxy crashes."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.kill()
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)

    async def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), SIGKILL if it is still there after a few seconds."""
        process, self._process = self._process, None
        await _terminate(process)


# -- tinyproxy --------------------------------------------------------------------------------


def _find_tinyproxy() -> str | None:
    found = shutil.which("tinyproxy")
    if found:
        return found
    for path in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy", "/usr/local/bin/tinyproxy"):
        if os.access(path, os.X_OK):
            return path
    return None


#: The tinyproxy binary, or ``None`` when it is not installed.
TINYPROXY = _find_tinyproxy()

_TINYPROXY_CONF = """\
Port {port}
Listen 127.0.0.1
Timeout 30
MaxClients 100
LogFile "{dir}/tinyproxy.log"
LogLevel Info
PidFile "{dir}/tinyproxy.pid"
Allow 127.0.0.1
DisableViaHeader Yes
BasicAuth {user} {password}
"""


class TinyProxy:
    """tinyproxy, a real forward proxy, on 127.0.0.1, run from a test (in the foreground:
    nothing is left behind when it is stopped). It asks for ``BasicAuth user password`` and,
    as it does for wrong or missing credentials, answers 401 to such a ``CONNECT``; its log
    (``log``) shows each request it got.

    Raises:
        RuntimeError: tinyproxy is not installed, or did not start.
    """

    def __init__(self, directory: Path, user: str, password: str) -> None:
        if TINYPROXY is None:
            raise RuntimeError("tinyproxy is not installed")
        self.directory = directory
        self.port = free_port()
        self.user = user
        self.password = password
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy's URL with credentials in it (as users put them in ``HTTPS_PROXY``)."""
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / "tinyproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def connects(self) -> int:
        """``CONNECT`` requests tinyproxy received (from its log)."""
        return sum(1 for line in self.log.splitlines() if "): CONNECT " in line)

    async def __aenter__(self) -> TinyProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        assert TINYPROXY is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "tinyproxy.conf"
        conf.write_text(
            _TINYPROXY_CONF.format(
                dir=self.directory, port=self.port, user=self.user, password=self.password
            )
        )
        process = await asyncio.create_subprocess_exec(
            TINYPROXY,
            "-d",
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._process = process
        if not await _wait_listening(self.port, lambda: process.returncode is None, _START_TIMEOUT):
            await self.stop()
            raise RuntimeError(f"tinyproxy did not start; its log:\n{self.log}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        await _terminate(process)


# -- a forward proxy --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy received: ``CONNECT host:port``, or a plain request in absolute
    form (``POST http://host:port/path``); ``headers`` are keyed by lower-case name."""

    method: str
    target: str
    headers: dict[str, str] = field(repr=False)


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1 that counts what passes through it.

    Plain-HTTP requests in absolute form are forwarded (one upstream connection per client
    connection, kept alive), and ``CONNECT host:port`` opens a tunnel (for ``https://``
    targets). It connects only to loopback addresses: any other target gets a 403. With
    ``credentials=(user, password)``, a request without the matching
    ``Proxy-Authorization: Basic`` header gets a 407 (a refused ``CONNECT`` also closes the
    connection).

    Attributes:
        requests: Every request received, refused ones included, in order.
        tunnels: ``CONNECT`` tunnels opened.
        forwarded: Plain requests forwarded and answered.
        refused: Requests answered 407.
    """

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self._expected: str | None = None
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            self._expected = f"Basic {token}"
        self.requests: list[ProxiedRequest] = []
        self.tunnels = 0
        self.forwarded = 0
        self.refused = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``, without credentials."""
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy's URL with credentials in it (as users put them in ``HTTPS_PROXY``)."""
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def connects(self) -> int:
        """``CONNECT`` requests received (tunnels opened or refused)."""
        return sum(1 for request in self.requests if request.method == "CONNECT")

    async def __aenter__(self) -> ForwardProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=_STOP_TIMEOUT)
        await asyncio.wait_for(server.wait_closed(), _STOP_TIMEOUT)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: _Upstream | None = None
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                method, target, lines = head
                headers = {name.lower(): value for name, value in lines}
                self.requests.append(ProxiedRequest(method, target, headers))
                body = b"" if method == "CONNECT" else await _read_body(reader, headers)
                if self._expected is not None and headers.get("proxy-authorization") != (
                    self._expected
                ):
                    self.refused += 1
                    close = method == "CONNECT"
                    await _answer(writer, 407, "Proxy Authentication Required", close=close)
                    if close:
                        return
                    continue
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                url = urlsplit(target)
                if url.scheme != "http" or not _is_loopback(url.hostname):
                    await _answer(writer, 403, "Forbidden", close=True)
                    return
                key = (url.hostname or "", url.port or 80)
                if upstream is None or upstream.key != key or upstream.writer.is_closing():
                    if upstream is not None:
                        upstream.writer.close()
                    upstream = _Upstream(key, *await asyncio.open_connection(*key))
                path = url.path or "/"
                if url.query:
                    path += "?" + url.query
                kept = [
                    (name, value) for name, value in lines if not name.lower().startswith("proxy-")
                ]
                upstream.writer.write(_head_bytes(f"{method} {path} HTTP/1.1", kept) + body)
                await upstream.writer.drain()
                answer, reusable = await _read_response(upstream.reader)
                self.forwarded += 1
                writer.write(answer)
                await writer.drain()
                if not reusable:
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            if upstream is not None:
                upstream.writer.close()

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = target.rpartition(":")
        if not _is_loopback(host) or not port.isdigit():
            await _answer(writer, 403, "Forbidden", close=True)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            await _answer(writer, 502, "Bad Gateway", close=True)
            return
        self.tunnels += 1
        self._writers.add(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()


@dataclass
class _Upstream:
    key: tuple[str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def _read_head(
    reader: asyncio.StreamReader,
) -> tuple[str, str, list[tuple[str, str]]] | None:
    """A request's method, target and header lines; ``None`` at a clean end of stream."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    first, *rest = raw.decode("latin-1").split("\r\n")
    method, target, _ = first.split(" ", 2)
    lines = []
    for line in rest:
        if line:
            name, _, value = line.partition(":")
            lines.append((name.strip(), value.strip()))
    return method, target, lines


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("this proxy does not forward chunked request bodies")
    length = int(headers.get("content-length", "0") or "0")
    return await reader.readexactly(length) if length else b""


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """A whole response as bytes, and whether the connection it came on may be used again."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _HEAD_LIMIT:
        raise ValueError("response head too long")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        reusable = headers.get("connection", "").lower() != "close"
        return head + body, reusable
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("this proxy does not forward chunked responses")
    return head + await reader.read(), False  # the body runs to the end of the connection


def _head_bytes(first: str, lines: list[tuple[str, str]]) -> bytes:
    text = first + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in lines) + "\r\n"
    return text.encode("latin-1")


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str, *, close: bool) -> None:
    lines = [("Content-Length", "0")]
    if status == 407:
        lines.append(("Proxy-Authenticate", 'Basic realm="test proxy"'))
    if close:
        lines.append(("Connection", "close"))
    writer.write(_head_bytes(f"HTTP/1.1 {status} {reason}", lines))
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


# -- certificates -----------------------------------------------------------------------------


class Certificates:
    """A private CA (trustme) with a server certificate for 127.0.0.1 and localhost, and a
    client certificate, written to ``directory`` as PEM files where a path is needed."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.client = self.ca.issue_cert("client.datafast-async.test")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        #: TLS handshakes the server contexts made began (client hellos received).
        self.handshakes = 0

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        if require_client_cert:
            self.ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        context.sni_callback = self._hello
        return context

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        """A client context that trusts the CA (the README's ``ssl=`` recipe)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert:
            self.client.configure_cert(context)
        return context

    def _hello(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.handshakes += 1
