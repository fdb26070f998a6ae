"""A local OpenAI-compatible `/v1/completions` server for tests: real HTTP on 127.0.0.1 (port 0), in a thread.

`answer(prompt, request_json)` returns the request's choices as `(text, finish_reason)` pairs; the server counts
`len(text) + 1` completion tokens per choice. It can require an API key, fail the first `fail_first` requests (or
all, `always_fail`) with HTTP 500, and sleep `delay` seconds before answering. It records every request body and
the most requests it held at once (`max_in_flight`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str, dict[str, Any]], list[tuple[str, str]]]


class CompletionServer:
    """Use as a context manager; `base_url` is what an OpenAI client takes (`http://127.0.0.1:PORT/v1`)."""

    def __init__(self, answer: Answer, api_key: str | None = None, fail_first: int = 0, always_fail: bool = False,
                 delay: float = 0.0) -> None:
        self.answer = answer
        self.api_key = api_key
        self.failures_left = fail_first
        self.always_fail = always_fail
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.attempts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)  # quick shutdown

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> CompletionServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one request."""
        with self.lock:
            self.attempts += 1
            failing = self.always_fail or self.failures_left > 0
            self.failures_left -= 1
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "bad API key", "type": "auth"}}
        if failing:
            return 500, {"error": {"message": "server is failing on purpose", "type": "server_error"}}
        time.sleep(self.delay)
        with self.lock:
            self.requests.append(body)
        choices = self.answer(body["prompt"], body)
        tokens = sum(len(text) + 1 for text, _ in choices)
        listed = [{"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                  for i, (text, reason) in enumerate(choices)]
        return 200, {
            "id": f"cmpl-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
            "model": body["model"], "choices": listed[::-1],  # reversed: clients must order choices by index
            "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": tokens,
                      "total_tokens": len(body["prompt"]) + tokens},
        }


def _handler(server: CompletionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/completions":
                    status, reply = 404, {"error": {"message": f"no route {self.path}"}}
                else:
                    status, reply = server.respond({k.lower(): v for k, v in self.headers.items()}, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "10")  # the openai client honours it: quick retries
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass
            finally:
                with server.lock:
                    server.in_flight -= 1

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    return Handler
