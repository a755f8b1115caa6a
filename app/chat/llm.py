"""An optional language model writes the words of the bot's replies; the built-in replies stay the default.

The keyword detector stays the one source of truth for what is searched and drawn: the bot answers a turn
as it always does (`Bot.respond`: chips, images, products), and only then is the model told the facts of
that turn (the chips, what changed, how many images, the top products with their titles, what a photo was
described as) and the last few turns, and asked for 1-3 sentences that may suggest one refinement and must
not invent products or prices (`build_messages`). Small talk and fashion questions without an item ("is
navy too dark for summer?") go to it too. It never changes the chips, images or products.

The server is any OpenAI-compatible one: Ollama (`http://localhost:11434/v1`), llama.cpp's server
(`http://127.0.0.1:8080/v1`), ... `stream_chat` posts to `/chat/completions` with `stream: true` and parses
the server-sent events; `list_models` reads `GET /models` (the Preferences' "Test connection").
The client is a small HTTP/1.1 client on a plain socket (standard library only) that reads with `select`
in slices of POLL_S, so `check()` (the worker job's cancel) runs between them and a cancel lands at once,
even while a server stays silent.

Never blocking the conversation (`ReplyWriter.write`, on the worker thread): the bot's reply goes out
first as a progress event (its images and products show at once), then the words so far (`Words`) as
each piece arrives. A refused connection, an HTTP error, a bad response or no first token within
FIRST_TOKEN_S falls back to the built-in reply with a "(built-in reply: <reason>)" note, said once per
problem: again only when the problem changes or after the model answered in between.

The API key goes in the Authorization header only: it is never logged, never in an error, a reply or
the history. No tkinter here.
"""
from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from app.chat.bot import Reply

log = logging.getLogger(__name__)

ENV_URL = "FASHIONGAN_LLM_URL"      # base URL, e.g. http://localhost:11434/v1 (the command line and the bundle)
ENV_MODEL = "FASHIONGAN_LLM_MODEL"  # model name, e.g. llama3.2:3b
ENV_KEY = "FASHIONGAN_LLM_KEY"      # API key, when the server wants one
FIRST_TOKEN_S = 4.0    # no text this long after the request was sent: the built-in reply
STALL_S = 10.0         # once it writes: the longest silence between two pieces
TOTAL_S = 45.0         # the longest whole answer
POLL_S = 0.1           # socket reads wait at most this long, then check() runs (cancel)
MAX_TOKENS = 120       # 1-3 sentences (the answer is cut after the third)
TEMPERATURE = 0.7
MAX_SENTENCES = 3      # the answer is cut after this many sentences
MAX_CHARS = 480        # ... or this many characters
HISTORY_TURNS = 3      # earlier turns (user + reply) the model sees
MAX_PRODUCTS = 3       # top products named in the facts
TURN_CHARS = 400       # an earlier turn's text is cut to this many characters in the prompt
ERROR_BODY = 4000      # bytes of an HTTP error's body read for its message

SYSTEM_PROMPT = """You write the replies of FashionGAN, a fashion shopping assistant in a desktop app.
The app itself detects what the shopper wants, draws design ideas and searches the product catalogue;
you only put the result of this turn into words.
Rules: answer in 1 to 3 short sentences, friendly and plain. You may suggest one refinement (a colour,
an occasion, who it is for). Mention only the products listed in the facts; never invent products,
brands, prices, sizes or stock. Do not repeat the facts as a list."""

NO_ITEM = ("No shopping item was detected in this message. If it is a fashion question, answer it briefly "
           "from general fashion sense; if it is small talk, reply kindly. Then invite them to name an item, "
           "for example \u201ca red dress for a party\u201d.")

_HEADLINE_FACTS = {
    "Looking for:": "The shopper is looking for",
    "This looks like:": "Their photo was described as",
    "Variants of your photo:": "Variants of their photo were drawn as",
    "So far:": "Known so far (the item type is still missing)",
}


class LLMError(Exception):
    """A request that gave no usable answer. `reason`: one line for the user; `key`: the kind of problem
    (the same key twice is the same problem, said once)."""

    def __init__(self, reason: str, key: str):
        super().__init__(reason)
        self.reason = reason
        self.key = key


class _Timeout(Exception):
    pass


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class LLMConfig:
    url: str                                   # base URL of an OpenAI-compatible API, e.g. http://host:8080/v1
    model: str = ""                            # "" lets a one-model server (llama.cpp) pick its own
    api_key: str = field(default="", repr=False)
    first_token_s: float = FIRST_TOKEN_S

    @property
    def where(self) -> str:
        """The server for messages and logs: scheme, host, port and path, never a key or a password."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def config_from(settings=None, url: str | None = None, model: str | None = None,
                api_key: str | None = None) -> LLMConfig | None:
    """The language model to use: `url`/`model`/`api_key` (the command line) first, then FASHIONGAN_LLM_URL
    and the other variables, then the settings (`llm_url`, `llm_model`, `llm_key`); None when no URL is set
    (the built-in replies)."""
    env = os.environ
    url = (url or env.get(ENV_URL) or getattr(settings, "llm_url", "") or "").strip()
    if not url:
        return None
    model = (model or env.get(ENV_MODEL) or getattr(settings, "llm_model", "") or "").strip()
    api_key = (api_key or env.get(ENV_KEY) or getattr(settings, "llm_key", "") or "").strip()
    return LLMConfig(check_url(url), model, api_key, FIRST_TOKEN_S)


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; ValueError with a one-line reason otherwise."""
    url = url.strip()
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r} (e.g. http://localhost:11434/v1)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    return parts.geturl()


# ---------------------------------------------------------------------------------------------- the client


class _Reader:
    """Buffered reads from a non-blocking socket, in slices of POLL_S with check() between them, until
    `deadline` (time.monotonic(); the caller moves it)."""

    def __init__(self, sock, check: Callable[[], None], deadline: float):
        self.sock, self.check, self.deadline = sock, check, deadline
        self.buf = b""
        self.eof = False

    def _recv(self) -> bytes:
        while True:
            self.check()
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _Timeout()
            pending = getattr(self.sock, "pending", None)  # TLS: decrypted bytes select() can't see
            if not (pending and pending()):
                ready, _, _ = select.select([self.sock], [], [], min(POLL_S, left))
                if not ready:
                    continue
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
                continue
            except OSError as exc:
                raise LLMError(f"the connection broke ({exc.strerror or exc})", "broken") from exc
            if not data:
                self.eof = True
            return data

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self._recv()
        self.buf += data
        return bool(data)

    def readline(self, limit: int = 65536) -> bytes:
        while b"\n" not in self.buf and len(self.buf) < limit and self._fill():
            pass
        end = self.buf.find(b"\n") + 1 or len(self.buf)
        line, self.buf = self.buf[:end], self.buf[end:]
        return line

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and self._fill():
            pass
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def some(self) -> bytes:
        """What is buffered, else the next bytes to arrive; b"" at the end."""
        if not self.buf:
            self._fill()
        data, self.buf = self.buf, b""
        return data


@dataclass
class _Response:
    sock: socket.socket
    reader: _Reader
    status: int
    reason: str
    headers: dict[str, str]

    def body(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (chunked, sized, or up to the end of the connection)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                line = self.reader.readline()
                if not line:
                    raise LLMError("the answer was cut off", "broken")
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError as exc:
                    raise LLMError("bad response from the server (broken chunked encoding)", "bad") from exc
                if size == 0:
                    return
                data = self.reader.read(size + 2)
                if len(data) < size:
                    raise LLMError("the answer was cut off", "broken")
                yield data[:size]
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"] or 0)
            while left > 0:
                data = self.reader.some()[:left]
                if not data:
                    raise LLMError("the answer was cut off", "broken")
                left -= len(data)
                yield data
        else:
            while data := self.reader.some():
                yield data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _open(config: LLMConfig, method: str, path: str, body: bytes | None, check: Callable[[], None],
          deadline: float) -> _Response:
    """Send one request (Connection: close) and read the status line and headers by `deadline`."""
    parts = urlsplit(config.url)
    host, secure = parts.hostname, parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path.rstrip("/") or "/v1") + path
    check()
    try:
        sock = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
    except ConnectionRefusedError as exc:
        raise LLMError(f"connection refused at {host}:{port}", "refused") from exc
    except socket.gaierror as exc:
        raise LLMError(f"unknown host {host}", "host") from exc
    except TimeoutError as exc:
        raise LLMError(f"no answer within {config.first_token_s:g} s", "timeout") from exc
    except OSError as exc:
        raise LLMError(f"cannot connect to {host}:{port} ({exc.strerror or exc})", "connect") from exc
    try:
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                 "Accept: text/event-stream, application/json", "User-Agent: FashionGAN"]
        if config.api_key:
            lines.append(f"Authorization: Bearer {config.api_key}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        sock.setblocking(False)
        reader = _Reader(sock, check, deadline)
        status_line = reader.readline().decode("latin-1").strip()
        words = status_line.split(None, 2)
        if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
            raise LLMError("bad response from the server (not HTTP)" if status_line
                           else "the server closed the connection without answering", "bad")
        headers = {}
        while (line := reader.readline()).strip():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return _Response(sock, reader, int(words[1]), words[2] if len(words) > 2 else "", headers)
    except _Timeout as exc:
        sock.close()
        raise LLMError(f"no answer within {config.first_token_s:g} s", "timeout") from exc
    except ssl.SSLError as exc:
        sock.close()
        raise LLMError(f"TLS failed with {host}:{port} ({exc.reason or exc})", "tls") from exc
    except TimeoutError as exc:
        sock.close()
        raise LLMError(f"no answer within {config.first_token_s:g} s", "timeout") from exc
    except OSError as exc:
        sock.close()
        raise LLMError(f"the connection broke ({exc.strerror or exc})", "broken") from exc
    except BaseException:
        sock.close()
        raise


def _one_line(text: str, limit: int = 140) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _http_error(response: _Response) -> LLMError:
    """An HTTP error as one line, with the server's own message when its body has one."""
    body = b""
    try:
        for data in response.body():
            body += data
            if len(body) >= ERROR_BODY:
                break
    except (LLMError, _Timeout):
        pass
    message = ""
    try:
        data = json.loads(body.decode("utf-8", "replace"))
        error = data.get("error", data.get("detail", "")) if isinstance(data, dict) else ""
        message = error.get("message", "") if isinstance(error, dict) else str(error or "")
    except ValueError:
        message = body.decode("utf-8", "replace") if body and len(body) < 200 else ""
    reason = f"HTTP {response.status} {response.reason}".strip()
    return LLMError(_one_line(f"{reason}: {message}" if message else reason), f"http {response.status}")


def _json(text: str | bytes):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LLMError(f"bad response from the server (not JSON: {_one_line(repr(text[:60]), 80)})", "bad") from exc


def _events(body: Iterator[bytes]) -> Iterator[str]:
    """The data of each server-sent event."""
    buf, data = b"", []
    for piece in body:
        buf += piece
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif not line.startswith(b":"):
                name, _, value = line.partition(b":")
                if name == b"data":
                    data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
    if data:
        yield "\n".join(data)


def _content(obj, key: str) -> str:
    """choices[0][key].content of a chat completion (chunk); LLMError for anything else."""
    if isinstance(obj, dict) and obj.get("error"):
        error = obj["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise LLMError(_one_line(f"the server reported: {message}"), "server")
    try:
        choices = obj["choices"]
        if not choices:
            return ""
        return choices[0].get(key, {}).get("content") or ""
    except (TypeError, KeyError, AttributeError) as exc:
        raise LLMError("bad response from the server (not a chat completion)", "bad") from exc


@dataclass
class StreamStats:
    """What the last stream_chat took: for the logs and the bench."""

    first_token_s: float | None = None  # request sent -> first piece of text
    total_s: float = 0.0
    pieces: int = 0                     # text pieces (one token each on llama.cpp and Ollama)
    last_piece_s: float | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Pieces after the first, per second of writing them (the first token's wait left out)."""
        if self.pieces < 2 or self.first_token_s is None or not self.last_piece_s:
            return None
        span = self.last_piece_s - self.first_token_s
        return (self.pieces - 1) / span if span > 0 else None


def stream_chat(config: LLMConfig, messages: list[dict], check: Callable[[], None] = lambda: None,
                max_tokens: int = MAX_TOKENS, temperature: float = TEMPERATURE,
                stats: StreamStats | None = None) -> Iterator[str]:
    """The model's answer to `messages`, piece by piece as the server streams it. LLMError when the server
    can't be reached, answers with an HTTP error or something that is not a chat completion, or sends no text
    within `config.first_token_s`; `check()` runs at least every POLL_S (it may raise to cancel)."""
    stats = stats if stats is not None else StreamStats()
    request = {"messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": temperature}
    if config.model:
        request["model"] = config.model
    started = time.monotonic()
    response = _open(config, "POST", "/chat/completions", json.dumps(request).encode("utf-8"), check,
                     started + config.first_token_s)
    writing = False
    try:
        if response.status != 200:
            raise _http_error(response)
        if "text/event-stream" not in response.headers.get("content-type", ""):  # it ignored stream=true
            text = _content(_json(b"".join(response.body())), "message")
            if text:
                stats.first_token_s = stats.last_piece_s = time.monotonic() - started
                stats.pieces = 1
                yield text
            return
        for data in _events(response.body()):
            if data.strip() == "[DONE]":
                return
            piece = _content(_json(data), "delta")
            if not piece:
                continue
            now = time.monotonic() - started
            if not writing:
                writing = True
                stats.first_token_s = now
            stats.pieces += 1
            stats.last_piece_s = now
            response.reader.deadline = min(time.monotonic() + STALL_S, started + TOTAL_S)
            yield piece
    except _Timeout as exc:
        if writing:
            raise LLMError(f"the model stopped writing for {STALL_S:g} s", "stalled") from exc
        raise LLMError(f"no answer within {config.first_token_s:g} s", "timeout") from exc
    finally:
        stats.total_s = time.monotonic() - started
        response.close()


def list_models(config: LLMConfig, check: Callable[[], None] = lambda: None) -> list[str]:
    """The model names the server lists (GET /models); LLMError as for stream_chat."""
    response = _open(config, "GET", "/models", None, check, time.monotonic() + max(config.first_token_s, 4.0))
    try:
        if response.status != 200:
            raise _http_error(response)
        data = _json(b"".join(response.body()))
    except _Timeout as exc:
        raise LLMError(f"no answer within {config.first_token_s:g} s", "timeout") from exc
    finally:
        response.close()
    items = data.get("data", data.get("models")) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise LLMError("bad response from the server (no model list)", "bad")
    return [str(m.get("id") or m.get("name")) if isinstance(m, dict) else str(m) for m in items]


def describe_connection(config: LLMConfig, check: Callable[[], None] = lambda: None) -> str:
    """What the Preferences' "Test connection" says: the models found, or the problem, in one line."""
    try:
        models = list_models(config, check)
    except LLMError as exc:
        return f"Not connected: {exc.reason}."
    if not models:
        return f"Connected to {config.where}, but it lists no models."
    shown = ", ".join(models[:6]) + (f" and {len(models) - 6} more" if len(models) > 6 else "")
    found = f"Connected: {len(models)} model{'s' if len(models) != 1 else ''} ({shown})."
    if config.model and config.model not in models:
        found += f" \u201c{config.model}\u201d is not among them."
    return found


# --------------------------------------------------------------------------------------------- the prompt


def turn_facts(reply: Reply) -> list[str]:
    """The facts of a turn, one line each, from the bot's reply (what it detected, drew and found)."""
    facts = []
    labels = ", ".join(c.label for c in reply.chips)
    if reply.chips:
        lead = _HEADLINE_FACTS.get(reply.headline or "", (reply.headline or "Detected").rstrip(":"))
        facts.append(f"{lead}: {labels}.")
    if reply.kind == "clarify":
        facts.append("No item type was detected yet. If the message is a fashion question, answer it briefly; "
                     "then ask which kind of item they want.")
    if reply.note:
        facts.append(f"The app notes: {reply.note}")
    if reply.kind == "error":
        facts.append("The app could not do it: " + (reply.note or reply.text))
    if reply.images:
        facts.append(f"{len(reply.images)} design idea{'s' if len(reply.images) != 1 else ''} drawn for it.")
    elif reply.chips and reply.kind == "images":
        facts.append("No images were drawn.")
    if reply.similar:
        top = [_product(p) for p in reply.similar[:MAX_PRODUCTS]]
        facts.append(f"Top catalogue products found ({len(reply.similar)} in all): " + "; ".join(top) + ".")
    elif reply.kind == "images":
        facts.append("No catalogue products are shown.")
    if not reply.chips and not reply.images and not reply.similar and reply.kind != "clarify":
        facts.append(NO_ITEM)
    facts.append(f"The app's own short answer would be: {reply.text}")
    return facts


def _product(product: dict) -> str:
    kind = ", ".join(str(product[k]) for k in ("articleType", "baseColour") if product.get(k))
    title = product.get("title") or product.get("articleType") or "a product"
    return f"\u201c{title}\u201d ({kind})" if kind else f"\u201c{title}\u201d"


def build_messages(user_text: str, reply: Reply, turns=()) -> list[dict]:
    """The chat for the model: the system prompt with this turn's facts, the last few turns, the message."""
    system = SYSTEM_PROMPT + "\n\nFacts of this turn:\n" + "\n".join(f"- {f}" for f in turn_facts(reply))
    messages = [{"role": "system", "content": system}]
    for said, answered in list(turns)[-HISTORY_TURNS:]:
        messages += [{"role": "user", "content": said[:TURN_CHARS]},
                     {"role": "assistant", "content": answered[:TURN_CHARS]}]
    messages.append({"role": "user", "content": user_text or "(sent a photo)"})
    return messages


_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u201d)]* ")


def tidy(text: str, sentences: int = MAX_SENTENCES) -> tuple[str, bool]:
    """The answer as shown: one paragraph (whitespace runs as one space), cut after `sentences` sentences or
    MAX_CHARS characters; and whether it was cut."""
    text = " ".join(text.split())
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if len(ends) >= sentences:
        text, cut = text[: ends[sentences - 1]].strip(), True
    else:
        cut = False
    if len(text) > MAX_CHARS:  # a model that never ends a sentence
        return text[:MAX_CHARS].rsplit(" ", 1)[0] + " \u2026", True
    return text, cut


# ------------------------------------------------------------------------------------------- the writer


@dataclass
class Words:
    """Progress of a reply being written: all its words so far."""

    text: str


@dataclass
class WrittenReply(Reply):
    """A reply whose text the language model wrote (the chips, images and products are the bot's)."""

    builtin: str = ""  # the bot's own text
    written = True     # (not a field) the chat view shows the text under the chips

    def record(self) -> dict:
        return super().record() | {"written": True}


class ReplyWriter:
    """Writes the words of the bot's replies with a language model (worker thread), or says why not."""

    def __init__(self, config: LLMConfig):
        self.config = config
        self.turns: deque[tuple[str, str]] = deque(maxlen=HISTORY_TURNS)
        self.problem: str | None = None    # the key of the last problem said in a note
        self.stats = StreamStats()        # of the last request

    def forget(self) -> None:
        """A cleared conversation: no earlier turns."""
        self.turns.clear()

    def write(self, user_text: str, reply: Reply, check: Callable[[], None] = lambda: None,
              progress: Callable[[object], None] | None = None) -> Reply:
        """The reply with the model's words, or the bot's reply (with a note the first time a problem shows;
        error replies always). `progress` gets the bot's reply first, then `Words` as they arrive. Cancelled
        (raised by check) passes through."""
        if reply.kind == "error":  # what went wrong is said as the bot knows it, word for word
            return reply
        emit = progress or (lambda part: None)
        emit(reply)
        self.stats = StreamStats()
        words = ""
        pieces = stream_chat(self.config, build_messages(user_text, reply, self.turns), check, stats=self.stats)
        try:
            for piece in pieces:
                words += piece
                shown, cut = tidy(words)
                emit(Words(shown))
                if cut:  # enough sentences: the rest is not read
                    break
            pieces.close()  # the connection, now
            words, _ = tidy(words)
            if not words:
                raise LLMError("the model sent no text", "empty")
        except LLMError as exc:
            log.info("language model at %s: %s; the built-in reply is used", self.config.where, exc.reason)
            self.turns.append((user_text, reply.text))
            if exc.key != self.problem:
                self.problem = exc.key
                note = f"(built-in reply: {exc.reason})"
                reply.note = f"{reply.note} {note}" if reply.note else note
            return reply
        log.info("language model at %s: first text after %.2f s, %d pieces in %.2f s", self.config.where,
                 self.stats.first_token_s or 0.0, self.stats.pieces, self.stats.total_s)
        self.problem = None
        self.turns.append((user_text, words))
        return written(reply, words)


def written(reply: Reply, words: str) -> WrittenReply:
    """A copy of `reply` whose text is `words` (attributes the window added come along)."""
    copy = WrittenReply(**{f.name: getattr(reply, f.name) for f in fields(Reply)}, builtin=reply.text)
    for name, value in vars(reply).items():
        if name not in vars(copy):
            setattr(copy, name, value)
    copy.text = words
    return copy
