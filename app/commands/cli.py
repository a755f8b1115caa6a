"""One command line for the app and its tools: `python main.py [COMMAND] ...`.

With no command the desktop window opens. Every command reports bad input as one line
`error: ...` on stderr with exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator

from app.commands.errors import CliError

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the usage block too
        raise CliError(f"{message} (see `{self.prog} --help`)")


def read_messages(texts: list[str]) -> Iterator[str]:
    """The positional texts, or one message per line from stdin when the only text is '-'."""
    if texts == ["-"]:
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line.strip():
                yield line
        return
    for text in texts:
        if not text.strip():
            raise CliError("empty message: give some text to analyse")
        yield text


def print_json_lines(objects: Iterable[dict]) -> None:
    for obj in objects:
        print(json.dumps(obj, ensure_ascii=False), flush=True)


def cmd_detect(args: argparse.Namespace) -> None:
    from app.chat.detector import get_detector

    detector = get_detector()
    print_json_lines(detector(text).to_dict() for text in read_messages(args.texts))


def cmd_gui(args: argparse.Namespace) -> None:
    try:
        from app.gui.window import run_app
    except ImportError as exc:  # a build without tkinter (or TkDND) still runs the other commands
        raise CliError(f"the desktop window is not available in this build ({exc})") from exc
    llm_config(args)  # a bad --llm-url (or FASHIONGAN_LLM_URL) is said here, before the window opens
    run_app(args)


def add_llm_options(parser: argparse.ArgumentParser, default=None) -> None:
    """--llm-url and --llm-model (app.chat.llm): on the main parser for the window, on `bench` for its stage.
    `default=argparse.SUPPRESS` on a subcommand keeps what the main parser was given."""
    parser.add_argument("--llm-url", metavar="URL", default=default,
                        help="a language model writes the replies: the base URL of its OpenAI-compatible API, "
                             "e.g. http://localhost:11434/v1 (default: $FASHIONGAN_LLM_URL, else Settings > "
                             "Preferences; none: the built-in replies)")
    parser.add_argument("--llm-model", metavar="NAME", default=default,
                        help="the model the server should use (default: $FASHIONGAN_LLM_MODEL, else the settings)")


def llm_config(args: argparse.Namespace, settings=None):
    """The language model these options (else FASHIONGAN_LLM_URL, else `settings`) name, or None; a bad URL
    is a CliError."""
    from app.chat.llm import config_from

    try:
        return config_from(settings, getattr(args, "llm_url", None), getattr(args, "llm_model", None))
    except ValueError as exc:
        raise CliError(f"--llm-url: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=os.path.basename(sys.argv[0]) or "main.py",  # "FashionGAN" when frozen
        description="FashionGAN multimodal search: with no command, opens the desktop app.",
    )
    parser.add_argument("--catalog", help="catalogue index to search (default: the bundled one)")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR")
    add_llm_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("gui", help="open the desktop app (the default)")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("detect", help="detect shopping keywords; prints one JSON object per message")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="messages, or '-' to read lines from stdin")
    p.set_defaults(func=cmd_detect)

    for register in _command_registrars():
        register(sub)
    return parser


def _command_registrars():
    """Each command module adds its own subcommands (`register(subparsers)`, handlers set with
    `set_defaults(func=...)`); the handlers import their heavy modules themselves, so --help stays fast."""
    from app.commands import bench, chat, eval_detector, generate, search

    return [generate.register, eval_detector.register, search.register, bench.register, chat.register]


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        (getattr(args, "func", None) or cmd_gui)(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
