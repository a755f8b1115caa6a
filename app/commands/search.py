"""`main.py search`, `main.py variants` and `main.py index`: catalogue search from the command line.

    search [TEXT] [--image PATH] [--k 10] [--catalog PATH] [--[no-]expand] one query -> one JSON object
    search --queries FILE                                                   JSON lines in, JSON lines out
    variants IMAGE [--text T] [--strength S] [--n 4] [--seed S] [--out DIR] PNGs + results.json
    variants --queries FILE                                                 many photos, one process
    index (--pack NPZ --meta CSV | --images DIR --styles CSV) --out PATH    build a catalogue
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.commands.errors import CliError

log = logging.getLogger(__name__)

MAX_K = 1000


def register(sub) -> None:
    p = sub.add_parser("search", help="find catalogue products for text, an image, or both; prints JSON")
    p.add_argument("text", nargs="*", metavar="TEXT", help="what to look for, e.g. 'navy blue shirt'")
    p.add_argument("--image", metavar="PATH", help="reference image; with TEXT the text modifies it ('in red')")
    p.add_argument("--queries", metavar="FILE", help='JSON lines {"text": ..., "image": PATH}; one result line each')
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--expand", action=argparse.BooleanOptionalAction, default=None,
                   help="add images the generator draws for the text to the query (synthetic expansion); "
                        "off by default: measured not to help with the bundled models")
    _common(p)
    p.set_defaults(func=run_search)

    p = sub.add_parser("variants", help="draw variants of a reference image, with optional changes; "
                                        "writes PNGs and results.json")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="the reference product photo")
    p.add_argument("--text", default="", help="what to change, e.g. 'in red' or 'as a dress'")
    p.add_argument("--strength", type=float, default=None,
                   help="how far the variants may move from the photo, 0 (the photo) to 1 (the full change); "
                        "default 0.7 (models.editing.DEFAULT_STRENGTH)")
    p.add_argument("--queries", metavar="FILE",
                   help='JSON lines {"image": PATH, "text": ...}: one process, one result line each')
    p.add_argument("--editor", metavar="PATH", help="editing generator checkpoint (default weights/editor.pt)")
    p.add_argument("--n", type=int, default=4, help="images (default 4)")
    p.add_argument("--seed", type=int, help="first seed (default: random); seeds are seed, seed+1, ...")
    p.add_argument("--out", default="generated", help="output folder (default ./generated)")
    p.add_argument("--k", type=int, default=8, help="similar products to list (default 8)")
    _common(p)
    p.set_defaults(func=run_variants)

    p = sub.add_parser("index", help="build a catalogue index from a pack or a Kaggle-layout folder")
    p.add_argument("--pack", metavar="NPZ", help="pack images (.npz with images and ids)")
    p.add_argument("--meta", metavar="CSV", help="the pack's metadata (default: NPZ name + _meta.csv)")
    p.add_argument("--images", metavar="DIR", help="folder of <id>.jpg (Kaggle layout)")
    p.add_argument("--styles", metavar="CSV", help="styles.csv of the Kaggle layout")
    p.add_argument("--out", required=True, metavar="PATH", help="catalogue file to write (.npz)")
    p.add_argument("--select", type=int, default=0, metavar="N",
                   help="keep N products spread evenly over (item type, colour) pairs (0 = all)")
    p.add_argument("--limit", type=int, default=0, help="read only the first N products")
    p.add_argument("--embedding", metavar="PATH", help="embedding checkpoint (default weights/embedding.pt)")
    p.set_defaults(func=run_index)


def _common(p) -> None:
    # SUPPRESS: not given after the command, the global `main.py --catalog PATH` stays in force.
    p.add_argument("--catalog", default=argparse.SUPPRESS, metavar="PATH",
                   help="catalogue index to search (default: the bundled one)")
    p.add_argument("--embedding", metavar="PATH", help="embedding checkpoint (default weights/embedding.pt)")
    p.add_argument("--weights", help="generator checkpoint (default: the bundled one)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


# ---- search -------------------------------------------------------------------------------------

def read_queries(path: str) -> list[dict]:
    """All queries checked (and their images opened) before any is run: bad input fails up front."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read queries file {path}: {exc}") from exc
    queries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}, line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not set(obj) & {"text", "image"}:
            raise CliError(f'{path}, line {number}: expected an object with "text" and/or "image"')
        text, image = obj.get("text"), obj.get("image")
        if (text is not None and not isinstance(text, str)) or (image is not None and not isinstance(image, str)):
            raise CliError(f'{path}, line {number}: "text" and "image" must be strings')
        if not (text or "").strip() and not image:
            raise CliError(f"{path}, line {number}: empty query")
        if image and not Path(image).is_absolute() and not Path(image).exists() and (file.parent / image).exists():
            image = str(file.parent / image)  # relative to the queries file
        picture = _open(image, f"{path}, line {number}: ") if image else None
        queries.append({"text": text, "image": image, "picture": picture})
    if not queries:
        raise CliError(f"{path} holds no queries")
    return queries


def _open(path: str, where: str = ""):
    from models.images import open_image

    try:
        return open_image(path)
    except ValueError as exc:
        raise CliError(f"{where}{exc}") from exc


def _service(args, need_generator: bool):
    from app.chat.service import ModelService
    from models.checkpoint import CheckpointError
    from models.search.catalog import CatalogError

    service = ModelService(weights=args.weights, catalog=getattr(args, "catalog", None), device=args.device,
                           embedding_weights=args.embedding, editor_weights=getattr(args, "editor", None))
    try:
        if need_generator:
            service.load()
        service.load_catalog()
    except (CatalogError, CheckpointError) as exc:
        raise CliError(str(exc)) from exc
    return service


def _generator_for_expansion(service, args) -> None:
    """The expansion is optional: without generator weights text queries run on the text alone."""
    from models.checkpoint import CheckpointError

    try:
        service.generator = service._load_generator()
    except (CheckpointError, OSError, ValueError) as exc:
        log.warning("no synthetic expansion: %s", exc)


def run_search(args: argparse.Namespace) -> None:
    from models.search.retrieval import EXPAND_DEFAULT, EXPANSION_WEIGHT

    if not 1 <= args.k <= MAX_K:
        raise CliError(f"--k must be between 1 and {MAX_K}")
    text = " ".join(args.text).strip()
    if args.queries:
        if text or args.image:
            raise CliError("give either --queries FILE or TEXT/--image, not both")
        queries = read_queries(args.queries)
    else:
        if args.text and not text:
            raise CliError("empty query text")
        if not text and not args.image:
            raise CliError("nothing to search for: give TEXT, --image PATH or --queries FILE")
        queries = [{"text": text or None, "image": args.image,
                    "picture": _open(args.image) if args.image else None}]
    expand = (EXPAND_DEFAULT if args.expand is None else args.expand) and EXPANSION_WEIGHT > 0
    service = _service(args, need_generator=False)
    if expand and any(q["text"] and not q["picture"] for q in queries):
        _generator_for_expansion(service, args)
    retriever = service._search_ready()
    for q in queries:
        query = retriever.query(q["text"], [q["picture"]] if q["picture"] else [], expand=expand)
        out = {"query": {"text": q["text"], "image": q["image"], **query.to_dict()},
               "results": retriever.search(query, args.k)}
        print(json.dumps(out, ensure_ascii=False), flush=True)


# ---- variants -----------------------------------------------------------------------------------

def run_variants(args: argparse.Namespace) -> None:
    from app.chat.service import pick_seeds

    if not 1 <= args.n <= 64:
        raise CliError("--n must be between 1 and 64")
    if not 0 <= args.k <= MAX_K:
        raise CliError(f"--k must be between 0 and {MAX_K}")
    if args.strength is not None and not 0 <= args.strength <= 1:
        raise CliError("--strength must be between 0 and 1")
    if args.queries and args.image:
        raise CliError("give either --queries FILE or IMAGE, not both")
    if args.queries:
        queries = read_queries(args.queries)
        if missing := [i for i, q in enumerate(queries, 1) if not q["picture"]]:
            raise CliError(f"{args.queries}: every query needs an \"image\" (line(s) {missing})")
    elif args.image:
        queries = [{"text": args.text, "image": args.image, "picture": _open(args.image)}]
    else:
        raise CliError("nothing to edit: give IMAGE or --queries FILE")
    service = _service(args, need_generator=True)
    if service.editor is None:
        raise CliError(f"photo variants are unavailable: {service.editor_error}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for number, query in enumerate(queries):
        prefix = f"q{number:03d}_" if args.queries else ""
        seeds = pick_seeds(args.n, args.seed)
        result, summary = _one_variant_query(service, query, seeds, args, out, prefix)
        results.append(result)
        print(json.dumps(summary, ensure_ascii=False), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")


def _one_variant_query(service, query: dict, seeds: list[int], args, out: Path, prefix: str):
    """Draw, save and describe one photo's variants -> (results.json entry, printed summary)."""
    from models.editing import NotEditable

    text, picture = query["text"] or "", query["picture"]
    try:
        generated, described = service.variants(picture, text, seeds, strength=args.strength)
    except NotEditable as exc:
        raise CliError(f"{query['image']}: {exc}") from exc
    similar = [{k: v for k, v in p.items() if k != "thumbnail"}
               for p in service.similar_to_image(picture, text, args.k)] if args.k else []
    files = []
    for seed, image in zip(generated.seeds, generated.images):
        name = f"{prefix}variant_seed{seed}.png"
        image.save(out / name)
        files.append({"file": name, "seed": seed})
    original = described.pop("original")
    detection = service.detect(text).to_dict() if text.strip() else None
    result = {"text": text, "image": query["image"], "detection": detection, "caption": generated.caption,
              "strength": service._strength(args.strength), "images": files, "predicted": original,
              "modified": described, "similar": similar}
    summary = {"out": str(out), "image": query["image"], "images": len(files), "caption": generated.caption,
               "predicted": {k: original[k] for k in ("articleType", "baseColour")}, "similar": len(similar)}
    return result, summary


# ---- index --------------------------------------------------------------------------------------

def run_index(args: argparse.Namespace) -> None:
    from models.checkpoint import CheckpointError
    from models.data import load_pack
    from models.search.catalog import Catalogue, load_folder, stratified_selection
    from models.search.retrieval import SearchModel

    pack, folder = bool(args.pack or args.meta), bool(args.images or args.styles)
    if pack == folder:
        raise CliError("give either --pack NPZ [--meta CSV] or --images DIR --styles CSV")
    if folder and not (args.images and args.styles):
        raise CliError("the Kaggle layout needs both --images DIR and --styles CSV")
    if pack and not args.pack:
        raise CliError("--meta needs --pack NPZ")
    if args.select < 0 or args.limit < 0:
        raise CliError("--select and --limit must be 0 or more")
    for path in filter(None, (args.pack, args.meta, args.images, args.styles)):
        if not Path(path).exists():
            raise CliError(f"not found: {path}")
    try:
        model = SearchModel(args.embedding)
    except CheckpointError as exc:
        raise CliError(str(exc)) from exc
    try:
        if pack:
            table = load_pack(args.pack, args.meta, limit=args.limit or None)
            source = str(args.pack)
        else:
            table = load_folder(args.images, args.styles, limit=args.limit or None)
            source = str(args.images)
    except (KeyError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the product table: {exc}") from exc
    if len(table) == 0:
        raise CliError("no products with readable images found")
    skipped = table.skipped
    if args.select and args.select < len(table):
        table = table.subset(stratified_selection(table.rows, args.select))
    catalogue = Catalogue.build(table, model, source=source)
    catalogue.save(args.out)
    print(json.dumps({"out": args.out, "products": len(catalogue), "skipped": skipped,
                      "bytes": Path(args.out).stat().st_size, "model": model.fingerprint}))
