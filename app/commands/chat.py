"""`main.py chat`: the shopping conversation without a window, for scripts and tests.

Reads one message per line on stdin; a line that is a JSON object `{"image": PATH, "text": ...}` attaches a
photo (the text, optional, is the change to make: "in red"). Writes one JSON object per message on stdout:

    {"text", "kind", "headline", "chips": [{"label", "kind"}], "note", "caption", "seeds": [...],
     "images": [{"seed", "variation", "label", "file"}], "photo", "products": [{"id", "title", "type",
     "colour", "gender"}], "request": {...}}

"file" is there with `--out DIR` (the PNG written for the image); "photo" is the photo the images are
variants of (else null); "request" is what the bot is looking for after the message. `--state FILE` continues a
conversation across runs: the request (and the photo it came from) is read from FILE at the start and written
after every reply. Bad input (a broken JSON line, an image that can't be opened, a damaged state file) is one
`error: ...` line on stderr and exit status 2, as in every command.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.commands.errors import CliError

STATE_VERSION = 1


def register(sub) -> None:
    p = sub.add_parser("chat", help="talk to the assistant without a window: a message per line on stdin "
                                    "(or a JSON object with \"image\"), a JSON reply per line on stdout")
    p.add_argument("--state", metavar="FILE", help="the conversation to continue: read at the start if it "
                                                   "exists, written after every reply")
    p.add_argument("--out", metavar="DIR", help="write every reply's images here as PNGs")
    p.add_argument("--n", type=int, default=4, help="images per reply, 1 to 8 (default 4)")
    p.add_argument("--seed", type=int, help="the first seed of every new request (default: random seeds)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--weights", help="generator checkpoint (default: the bundled one)")
    p.set_defaults(func=run)


def parse_line(line: str, number: int) -> tuple[str, str | None]:
    """One stdin line -> (text, image path or None); a line starting with '{' must be a JSON object."""
    if not line.lstrip().startswith("{"):
        return line.strip(), None
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise CliError(f"line {number}: not JSON ({getattr(exc, 'msg', exc)})") from exc
    if not isinstance(message, dict) or not isinstance(message.get("image"), str) or not message["image"].strip():
        raise CliError(f'line {number}: expected {{"image": PATH, "text": ...}} with the path as a string')
    text = message.get("text") or ""
    if not isinstance(text, str):
        raise CliError(f'line {number}: "text" must be a string')
    unknown = sorted(set(message) - {"image", "text"})
    if unknown:
        raise CliError(f"line {number}: unknown key(s) {', '.join(unknown)} (expected image and text)")
    return text.strip(), message["image"]


class Conversation:
    """The state a `--state FILE` keeps between runs: the request, the photo it came from, the turn count."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.request: dict | None = None
        self.photo: str | None = None
        self.turns = 0
        if self.path is not None and self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError(f"expected an object with version {STATE_VERSION}")
            request, photo, turns = data.get("request"), data.get("photo"), data.get("turns", 0)
            if not (request is None or isinstance(request, dict)) or not (photo is None or isinstance(photo, str)) \
                    or not isinstance(turns, int) or turns < 0:
                raise ValueError("request, photo or turns of the wrong type")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CliError(f"{self.path}: not a conversation state this command wrote ({exc})") from exc
        self.request, self.photo, self.turns = request, photo, turns

    def save(self, request: dict, photo: str | None) -> None:
        self.request, self.photo = request, photo
        if self.path is not None:
            from app.chat.storage import atomic_write_text

            atomic_write_text(self.path, json.dumps({"version": STATE_VERSION, "request": request, "photo": photo,
                                                     "turns": self.turns}, indent=1))


def load_service(args: argparse.Namespace):
    """The loaded models (their catalogue too, when it loads: similar products and photos need it)."""
    from app.chat.service import ModelService
    from models.checkpoint import CheckpointError

    service = ModelService(weights=args.weights, catalog=getattr(args, "catalog", None), device=args.device)
    try:
        service.load()
    except CheckpointError as exc:
        raise CliError(str(exc)) from exc
    return service


def open_photo(path: str, number: int):
    from models.images import open_image

    try:
        return open_image(path)
    except (OSError, ValueError) as exc:
        raise CliError(f"line {number}: {exc}") from exc


def run(args: argparse.Namespace) -> None:
    from app.chat.bot import Bot
    from app.chat.storage import Settings

    if not 1 <= args.n <= 8:
        raise CliError("--n must be between 1 and 8")
    conversation = Conversation(args.state)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    service = load_service(args)
    settings = Settings(images_per_request=args.n, seed_mode="random" if args.seed is None else "fixed",
                        fixed_seed=args.seed or 0).validated()
    bot = Bot(service, settings, state=conversation.request)
    bot.catalogue_ready = getattr(service, "retriever", None) is not None
    bot.catalogue_error = getattr(service, "catalog_error", None)
    photo = conversation.photo
    if photo is not None:  # the request came from a photo: "make it green" draws variants of it again
        from models.images import open_image

        try:
            bot.reference = open_image(photo)
        except (OSError, ValueError) as exc:
            raise CliError(f"{args.state}: the photo this conversation continues from can't be opened: {exc}") \
                from exc
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        text, image_path = parse_line(line, number)
        if image_path is not None:
            image = open_photo(image_path, number)
            reply = bot.respond_image(image, text, Path(image_path).name)
            if bot.reference is image:
                photo = str(Path(image_path).resolve())
        else:
            reply = bot.respond(text)
        if bot.reference is None:
            photo = None
        conversation.turns += 1
        request = bot.state.to_dict()
        print(json.dumps(reply_json(reply, service, out, conversation.turns, photo, request), ensure_ascii=False),
              flush=True)
        conversation.save(request, photo)


def reply_json(reply, service, out: Path | None, turn: int, photo: str | None, request: dict) -> dict:
    """A reply as one JSON object (see the module's docstring); its images written to `out`."""
    images = []
    for im in reply.images:
        entry = {"seed": im.seed, "variation": im.variation, "label": im.label}
        if out is not None:
            name = f"t{turn:03d}_seed{im.seed}" + (f"_v{im.variation}" if im.variation is not None else "") + ".png"
            im.image.save(out / name)
            entry["file"] = str(out / name)
        images.append(entry)
    variants = any(getattr(im, "reference", None) is not None for im in reply.images)
    return {
        "text": reply.text, "kind": reply.kind, "headline": reply.headline,
        "chips": [{"label": c.label, "kind": c.kind} for c in reply.chips], "note": reply.note,
        "caption": reply.caption, "seeds": [im.seed for im in reply.images], "images": images,
        "photo": photo if variants else None, "products": products_json(reply.similar, service),
        "request": request,
    }


def products_json(similar: list[dict], service) -> list[dict]:
    genders = {}
    if similar and callable(getattr(service, "products", None)):
        genders = {p["id"]: p.get("gender") for p in service.products([p.get("id") for p in similar])}
    return [{"id": p.get("id"), "title": p.get("title"), "type": p.get("articleType"), "colour": p.get("baseColour"),
             "gender": p.get("gender", genders.get(p.get("id")))} for p in similar]
