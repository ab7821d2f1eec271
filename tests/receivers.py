"""A real HTTP server on loopback that receives callbacks: it records each request and answers as
a test scripts it."""

import datetime
import http.server
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """One scripted answer: a status, headers and a body; `stream` sends body bytes until the client
    stops reading (counted in Receiver.streamed); `silent` never answers at all."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    stream: bool = False
    silent: bool = False


class Receiver:
    """Listens on `host` (127.0.0.1 or ::1) at a free port; answers each request with the next of
    `replies` (the last one again once they run out)."""

    def __init__(
        self, host: str = "127.0.0.1", replies: list[Reply] | None = None, tls: ssl.SSLContext | None = None
    ):
        self.replies = list(replies or [Reply()])
        self.received: list[Received] = []
        self.server_names: list[str | None] = []  # the names TLS clients asked for (SNI)
        self.streamed = 0  # bytes a streaming reply managed to send before the client went away
        self.release = threading.Event()  # lets a silent reply end, at teardown
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                receiver.answer(self, receiver.next_reply())

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self.server = Server((host, 0), Handler)
        self.port = self.server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda connection, name, context: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def next_reply(self) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def answer(self, handler: http.server.BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.silent:
            self.release.wait(30)
            return
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if reply.stream:
            handler.end_headers()
            self.stream_until_refused(handler.wfile)
            return
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)

    def stream_until_refused(self, out: Any) -> None:
        chunk = b"x" * 65536
        try:
            while self.streamed < 1024 * 1024 * 1024:  # a gigabyte: far past any bound
                out.write(chunk)
                self.streamed += len(chunk)
        except OSError:
            pass  # the client stopped reading and closed the connection

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def certificate(name: str, folder) -> tuple[str, str]:
    """A self-signed certificate for `name` and its key: (certificate file, key file) in `folder`.
    Trusting the certificate makes it its own authority."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)
