"""A real HTTP/1.1 server on loopback that keeps connections alive and answers as a test scripts it:
for the benchmarks' load client, whose tests must see it reuse, lose and open connections."""

import http.server
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Seen:
    """A request as the server read it; `connection` numbers the connections in the order they came."""

    method: str
    path: str
    params: dict[str, str]
    headers: Message
    body: bytes
    connection: int


@dataclass(frozen=True)
class Answer:
    """A scripted answer. `close`: close the connection after it without saying so (no `Connection:
    close`), as a server does when a kept-alive connection's time runs out; `hang_up`: close it without
    answering at all; `hold`: answer only once it is set (the test sets it before the server stops)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    close: bool = False
    hang_up: bool = False
    hold: threading.Event | None = None

    @classmethod
    def of_json(cls, value: Any, status: int = 200) -> "Answer":
        return cls(status, {"Content-Type": "application/json"}, json.dumps(value).encode())


class ScriptedServer:
    """`with ScriptedServer(answer) as server:` then requests to server.url; `answer(request, seen)`
    gives each request's Answer, `seen` being every request so far, this one last."""

    def __init__(self, answer: Callable[[Seen, list[Seen]], Answer]):
        self.seen: list[Seen] = []
        self.connections = 0
        lock = threading.Lock()
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept alive unless an answer says otherwise

            def setup(self) -> None:
                super().setup()
                with lock:
                    scripted.connections += 1
                    self.number = scripted.connections

            def do_GET(self) -> None:
                self.answer(b"")

            def do_POST(self) -> None:
                self.answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def answer(self, body: bytes) -> None:
                url = urlsplit(self.path)
                request = Seen(
                    self.command, url.path, dict(parse_qsl(url.query)), self.headers, body, self.number
                )
                with lock:
                    scripted.seen.append(request)
                    reply = answer(request, list(scripted.seen))
                if reply.hold is not None:
                    reply.hold.wait(30)
                if reply.hang_up:
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except ConnectionError:  # the client gave up waiting (a held answer) and went away
                    self.close_connection = True
                    return
                self.close_connection = self.close_connection or reply.close

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
