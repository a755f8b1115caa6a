"""`main.py generate`: prompts -> detected caption -> PNGs and DIR/results.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.commands.errors import CliError


def register(sub) -> None:
    p = sub.add_parser("generate", help="draw items for text prompts; writes PNGs and results.json")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="prompts such as 'a red dress for a party'")
    p.add_argument("--prompts", metavar="FILE", help="one prompt per line (many prompts, one process)")
    p.add_argument("--n", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--seed", type=int, help="first seed (default: random); seeds are seed, seed+1, ...")
    p.add_argument("--out", default="generated", help="output folder (default ./generated)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--weights", help="generator checkpoint (default: the bundled one)")
    p.set_defaults(func=run)


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.texts)
    if args.prompts:
        try:
            lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read prompts file {args.prompts}: {exc}") from exc
        prompts += [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise CliError("no prompt given: pass TEXT or --prompts FILE")
    if any(not p.strip() for p in prompts):
        raise CliError("empty prompt: give some text to draw")
    return prompts


def run(args: argparse.Namespace) -> None:
    from app.chat.service import ModelService, pick_seeds
    from models.checkpoint import CheckpointError

    if not 1 <= args.n <= 64:
        raise CliError("--n must be between 1 and 64")
    prompts = read_prompts(args)
    service = ModelService(weights=args.weights, device=args.device)
    try:
        service.load()
    except CheckpointError as exc:
        raise CliError(str(exc)) from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for index, text in enumerate(prompts):
        detection = service.detect(text)
        result = service.generate(detection.caption, pick_seeds(args.n, args.seed))
        files = []
        for seed, image in zip(result.seeds, result.images):
            name = f"p{index:03d}_seed{seed}.png"
            image.save(out / name)
            files.append({"file": name, "seed": seed, **_exemplar(image)})
        results.append({"text": text, "detection": detection.to_dict(), "caption": detection.caption,
                        "images": files})
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({"out": str(out), "prompts": len(results), "images": len(results) * args.n}))


def _exemplar(image) -> dict:
    """{"exemplar": product id} for an image redrawn from a catalogue product, else {}."""
    from models.exemplars import EXEMPLAR_KEY

    return {"exemplar": image.info[EXEMPLAR_KEY]} if EXEMPLAR_KEY in image.info else {}
