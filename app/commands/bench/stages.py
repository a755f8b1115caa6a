"""The model stages, each timed through the app's own code next to its floor (the bare model work):
loading, detector, text encoder, generator, retrieval, chat turns (Worker + Bot + ModelService), training.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.commands.bench.report import (
    ROOT,
    TARGET_TURN_MS,
    TARGET_TURN_RATIO,
    Report,
    Stage,
    add_samples,
    paired,
    percentile,
    say,
    timed,
)

GEN_BATCHES = (1, 4, 16)     # generator batch sizes
TURN_IMAGES = 4              # images per chat turn (the app's default setting)
SIMILAR_K = 16               # products a chat turn asks the catalogue for (app.chat.bot: SIMILAR_K + 8)

COLOURS = ["red", "navy blue", "black", "white", "green", "yellow", "pink", "grey", "brown", "purple",
           "orange", "beige", "maroon", "olive", "teal"]
ITEMS = ["dress", "shirt", "jeans", "sneakers", "handbag", "t-shirt", "skirt", "jacket", "sweater", "heels",
         "shorts", "kurta", "backpack", "sandals", "trousers", "cap"]
WHO = ["", " for men", " for women", " for a party", " for the office", " for sports"]
OTHER_MESSAGES = ["hi there", "what can you do?", "thanks!", "make it green", "not black", "show me more",
                  "same but for women", "with long sleeves", "I need something for a wedding", "bye"]


def chat_prompts(n: int) -> list[str]:
    """`n` distinct shopping requests (up to 1,440), each naming a colour and an item: full turns."""
    out = []
    for i in range(n):  # colour x item pairs repeat only every 240 prompts, and then `who` differs
        colour, item = COLOURS[i % len(COLOURS)], ITEMS[i % len(ITEMS)]
        who = WHO[(i + i // (len(COLOURS) * len(ITEMS))) % len(WHO)]
        out.append(f"{'a ' if i % 2 else ''}{colour} {item}{who}")
    return out


# ------------------------------------------------------------------------------------------- models


def load_service(report: Report, device: str, threads: int = 0):
    from app.chat.service import ModelService

    say("loading the models (ModelService.load) ...")
    service = ModelService(device=device, threads=threads)
    start = time.perf_counter()
    service.load(lambda message: say(f"  {message}"))
    total = time.perf_counter() - start
    labels = {"detector": "keyword detector", "text_encoder": "text encoder", "generator": "generator",
              "search_model": "search (embedding) model", "catalogue": "catalogue"}
    for name, label in labels.items():
        if name in service.timings:
            report.add(Stage(f"load_{name}_s", f"Load {label}", round(service.timings[name], 3), "s",
                             note="includes first imports" if name in ("detector", "text_encoder") else ""))
    report.add(Stage("load_total_s", "Load all models (in process)", round(total, 2), "s"))
    if getattr(service, "catalog_error", None):
        report.notes.append(f"catalogue unavailable, retrieval not measured: {service.catalog_error}")
    return service


def measure_detector(report: Report, service, reps: int) -> None:
    messages = chat_prompts(150) + OTHER_MESSAGES * 5
    detector = service.detector
    detector("warm up")
    start = time.perf_counter()
    for text in messages:
        detector(text)
    per_call = time.perf_counter() - start
    start = time.perf_counter()
    list(detector.pipe(messages))
    batched = time.perf_counter() - start
    report.add(Stage("detector_msgs_per_s", "Keyword detector throughput (one call per message)",
                     round(len(messages) / per_call, 1), "msg/s", round(len(messages) / batched, 1),
                     "same pipeline, one batch (nlp.pipe)", note=f"{len(messages)} messages"))


def _clear_caption_cache(encoder) -> None:
    cache = getattr(encoder, "_cache", None)
    if isinstance(cache, dict):
        cache.clear()


def measure_encoder(report: Report, service, reps: int) -> None:
    import torch

    encoder = service.encoder
    texts = iter(chat_prompts(reps + 1))
    tokens = encoder.tokenize(["navy blue shirts, men"])

    def encode():
        _clear_caption_cache(encoder)
        encoder.encode([next(texts)])

    def bare():
        with torch.inference_mode():
            encoder.model(**{k: v.to(encoder.device) for k, v in tokens.items()})

    latencies, floors = paired(encode, bare, reps)
    add_samples(report, "encoder_ms", latencies)
    report.add(Stage("encoder_ms", "Text encoder, one new caption (p50)", round(percentile(latencies, 50) * 1000, 2),
                     "ms", round(percentile(floors, 50) * 1000, 2), "MiniLM forward, tokens ready"))


def measure_generator(report: Report, service, reps: int) -> None:
    import torch

    from models.sampling import seed_noise

    gen = service.generator
    embedding = service.encoder.encode(["red dresses, party"])[0]
    for batch in GEN_BATCHES:
        seeds = list(range(batch))
        z = seed_noise(seeds, gen.config.z_dim).to(gen.device)
        text = embedding.reshape(1, -1).to(gen.device).expand(batch, -1)

        def forward(z=z, text=text):
            with torch.inference_mode():
                gen.net(z, text)
            if gen.device.type == "cuda":
                torch.cuda.synchronize()

        latencies, floors = paired(lambda s=seeds: gen.generate(embedding, s), forward, reps)
        add_samples(report, f"generator_b{batch}_ms", latencies)
        p50, floor = percentile(latencies, 50), percentile(floors, 50)
        report.add(Stage(f"generator_b{batch}_ms", f"Generator, batch {batch} (p50)", round(p50 * 1000, 2), "ms",
                         round(floor * 1000, 2), "forward pass only"))
        report.add(Stage(f"generator_b{batch}_img_per_s", f"Generator images/s, batch {batch}",
                         round(batch / p50, 1), "img/s", round(batch / floor, 1), "forward pass only"))


TARGET_VARIANTS_MS = 100.0  # one photo -> TURN_IMAGES variants, on top of describing it


def measure_variants(report: Report, service, reps: int) -> None:
    """One photo -> TURN_IMAGES variants "in red" through the service (describe, change, encode, edit), and
    the editing generator's own forward pass; the photo is a catalogue thumbnail, as a shopper's would be."""
    if service.editor is None or service.retriever is None:
        report.add(Stage("variants_ms", "Photo -> variants (p50)", None, "ms",
                         note=f"not measured: {service.editor_error or service.catalog_error}"))
        return
    photo = service.retriever.catalogue.thumbnail(0)
    seeds = list(range(TURN_IMAGES))
    own, wanted = service.encoder.encode(["blue tshirts", "red tshirts"])
    latencies, floors = paired(lambda: service.variants(photo, "in red", seeds),
                               lambda: service.editor.variants(photo, own, wanted, seeds), reps)
    add_samples(report, "variants_ms", latencies)
    p50, floor = percentile(latencies, 50), percentile(floors, 50)
    report.add(Stage("variants_ms", f"Photo -> {TURN_IMAGES} variants: describe + edit (p50)", round(p50 * 1000, 1),
                     "ms", round(floor * 1000, 1), f"editing generator, {TURN_IMAGES} images",
                     target=f"<= {TARGET_VARIANTS_MS:.0f} ms", ok=p50 * 1000 <= TARGET_VARIANTS_MS))


def measure_retrieval(report: Report, service, reps: int) -> None:
    if getattr(service, "retriever", None) is None:
        report.add(Stage("retrieval_ms", "Retrieval: similar products (p50)", None, "ms",
                         note=f"not measured: {getattr(service, 'catalog_error', None) or 'no catalogue'}"))
        return
    retriever = service.retriever
    captions = iter(list(dict.fromkeys(service.detect(p).caption for p in chat_prompts(3 * reps + 3))) * 2)
    images = service.generator.generate(service.encoder.encode(["blue jeans"])[0], list(range(TURN_IMAGES)))
    vector = retriever.text_vectors(["blue jeans"])[0]

    def similar():
        _clear_caption_cache(service.encoder)
        service.similar_products(caption=next(captions), images=images, k=SIMILAR_K)

    def bare():
        retriever.model.embed_images(images)
        retriever.catalogue.search(vector, SIMILAR_K)

    latencies, floors = paired(similar, bare, reps)
    search = timed(lambda: retriever.catalogue.search(vector, SIMILAR_K), reps)
    add_samples(report, "retrieval_ms", latencies)
    report.add(Stage("retrieval_ms", f"Retrieval: similar products for caption + {TURN_IMAGES} images (p50)",
                     round(percentile(latencies, 50) * 1000, 2), "ms", round(percentile(floors, 50) * 1000, 2),
                     "image embedding + catalogue search",
                     note=f"{len(retriever.catalogue)} products, k={SIMILAR_K}, includes the caption's encoding"))
    report.add(Stage("catalogue_search_ms", "Catalogue search alone (p50)", round(percentile(search, 50) * 1000, 3),
                     "ms", note=f"{len(retriever.catalogue)} products, exact matrix product"))


# ------------------------------------------------------------------------------------------- chat turns


class CacheCounter:
    """Wraps the service's text encoder: counts caption-embedding cache hits and misses."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.hits = self.misses = 0
        self._encode = encoder.encode
        encoder.encode = self.encode  # this process's own service object only

    def encode(self, texts, *args, **kwargs):
        cache = getattr(self.encoder, "_cache", {})
        for text in texts:
            if text in cache:
                self.hits += 1
            else:
                self.misses += 1
        return self._encode(texts, *args, **kwargs)

    def restore(self) -> None:
        self.encoder.encode = self._encode


class BenchSettings:
    images_per_request = TURN_IMAGES
    seed_mode = "random"
    fixed_seed = 0


def run_turns(service, prompts: list[str], clear_cache: bool = True,
              after: Callable[[str, object], None] | None = None) -> tuple[list[float], list[str], list]:
    """Each prompt as the window sends it: a Worker job calling Bot.respond, then Bot.finish (no writer here: the
    built-in text, as the app answers by default). Every prompt names a new item, so each is a new request.
    Returns seconds from submit to the result event, captions and replies.
    `after(prompt, reply)` runs after each turn, untimed (the floor is measured there, next to its turn)."""
    from app.chat.bot import Bot
    from app.chat.worker import CANCELLED, ERROR, RESULT, Worker

    worker = Worker(name="bench-worker").start()
    catalogue_ready = getattr(service, "retriever", None) is not None
    latencies, captions, replies = [], [], []
    bot = Bot(service, BenchSettings())
    bot.catalogue_ready = catalogue_ready
    try:
        for prompt in prompts:
            if clear_cache:
                _clear_caption_cache(service.encoder)
            start = time.perf_counter()
            request_id = worker.submit(lambda job, b=bot, p=prompt: b.finish(p, b.respond(p, job.check), job.check,
                                                                              job.progress), group="chat")
            while True:
                event = worker.events.get(timeout=600)
                if event.request_id == request_id and event.kind in (RESULT, ERROR, CANCELLED):
                    break
            latencies.append(time.perf_counter() - start)
            if event.kind != RESULT:
                raise RuntimeError(f"chat turn {prompt!r} failed: {getattr(event.data, 'message', event.kind)}")
            captions.append(event.data.caption)
            replies.append(event.data)
            if after is not None:
                after(prompt, event.data)
    finally:
        worker.stop()
    return latencies, captions, replies


def turn_floor(service, prompt: str, caption: str, images: list) -> float:
    """The bare model work of one turn, in seconds: detect + MiniLM forward + the drawing network's forward
    (4 images: the editing generator where catalogue exemplars draw the caption, else the text-only
    generator) + image embedding of the 4 images + catalogue search."""
    import numpy as np
    import torch

    from models.sampling import seed_noise

    start = time.perf_counter()
    service.detector(prompt)
    t_detect = time.perf_counter() - start
    tokens = service.encoder.tokenize([caption])
    gen = service.generator
    z = seed_noise(list(range(TURN_IMAGES)), gen.config.z_dim).to(gen.device)
    with torch.inference_mode():
        start = time.perf_counter()
        hidden = service.encoder.model(**{k: v.to(service.encoder.device) for k, v in tokens.items()})
        t_encode = time.perf_counter() - start
        text = hidden.last_hidden_state.mean(1)[:1].to(gen.device).expand(TURN_IMAGES, -1)
        editor = service.editor if service.draws_from_exemplars(caption) else None
        if editor is not None:
            photos = torch.zeros(TURN_IMAGES, 3, 64, 64, device=editor.device)
            text = text.to(editor.device)
            z = seed_noise(list(range(TURN_IMAGES)), editor.config.z_dim).to(editor.device)
        start = time.perf_counter()
        if editor is not None:
            editor.net(photos, text, text, z)
        else:
            gen.net(z, text)
        if gen.device.type == "cuda":
            torch.cuda.synchronize()
        t_generate = time.perf_counter() - start
    t_search = 0.0
    retriever = getattr(service, "retriever", None)
    if retriever is not None and images:
        pixels = np.stack([np.asarray(im) for im in images])
        start = time.perf_counter()
        vector = retriever.model.embed_images(pixels).mean(0)
        retriever.catalogue.search(vector, SIMILAR_K)
        t_search = time.perf_counter() - start
    return t_detect + t_encode + t_generate + t_search


def measure_chat(report: Report, service, turns: int, one_thread_turns: int) -> None:
    import torch

    prompts = chat_prompts(turns + 1)
    say(f"chat: {turns} turns through Worker + Bot + ModelService ...")
    run_turns(service, prompts[:1])  # warm-up (first-call allocations), not counted
    counter = CacheCounter(service.encoder)
    floors: list[float] = []

    def floor_after(prompt: str, reply) -> None:  # right after its turn: the same machine load
        floors.append(turn_floor(service, prompt, reply.caption or "", [im.image for im in reply.images]))

    try:
        latencies, captions, replies = run_turns(service, prompts[1:], after=floor_after)
    finally:
        counter.restore()
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    floor50 = percentile(floors, 50)
    ratio = p50 / floor50 if floor50 else None
    ok = p50 * 1000 < TARGET_TURN_MS and (ratio is not None and ratio <= TARGET_TURN_RATIO)
    with_images = sum(1 for r in replies if r.images)
    with_products = sum(1 for r in replies if r.similar)
    report.add(Stage("chat_turn_p50_ms", f"Chat turn: detect + encode + generate {TURN_IMAGES} + retrieve (p50)",
                     round(p50 * 1000, 1), "ms", round(floor50 * 1000, 1), "bare model work (p50)",
                     f"< {TARGET_TURN_MS:g} ms and <= {TARGET_TURN_RATIO:g}x floor", ok,
                     f"{len(latencies)} distinct requests; {with_images} with images, {with_products} with products"))
    report.add(Stage("chat_turn_p95_ms", "Chat turn (p95)", round(p95 * 1000, 1), "ms",
                     round(percentile(floors, 95) * 1000, 1), "bare model work (p95)"))
    report.details["chat"] = {
        "turns": len(latencies), "distinct_prompts": len(set(prompts[1:])), "distinct_captions": len(set(captions)),
        "latencies_ms": [round(x * 1000, 1) for x in latencies], "floors_ms": [round(x * 1000, 1) for x in floors],
        "caption_cache": {"cleared_before_each_turn": True, "hits": counter.hits, "misses": counter.misses,
                          "note": "hits are the retrieval reusing the caption the generator encoded in the same turn"},
        "replies_with_images": with_images, "replies_with_products": with_products,
    }
    threads = torch.get_num_threads()
    if threads > 1 and one_thread_turns > 0:
        torch.set_num_threads(1)
        try:
            extra = chat_prompts(turns + 1 + one_thread_turns)[turns + 1 :]
            lat1, _, _ = run_turns(service, extra)
        finally:
            torch.set_num_threads(threads)
        report.add(Stage("chat_turn_p50_1thread_ms", "Chat turn with 1 torch thread (p50, for comparison)",
                         round(percentile(lat1, 50) * 1000, 1), "ms",
                         note=f"{len(lat1)} turns; the app uses {threads} threads"))
        if percentile(lat1, 50) < 0.5 * p50:
            report.notes.append(f"with 1 torch thread a chat turn took {percentile(lat1, 50) * 1000:.0f} ms against "
                                f"{p50 * 1000:.0f} ms with {threads}: torch's threads wait on each other while "
                                "other programs hold the cores (set --threads 1, or torch.set_num_threads(1))")


# ------------------------------------------------------------------------------------------- training


def measure_training(report: Report, device: str, steps: int) -> None:
    from dataclasses import fields

    from models.checkpoint import load_checkpoint
    from models.config import TrainConfig
    from models.resources import GENERATOR_WEIGHTS
    from models.training.gan import Trainer

    pack = ROOT / "tests" / "fixtures" / "pack" / "mini.npz"
    if not pack.exists():
        report.notes.append(f"training not measured: {pack} is missing (a source checkout has it)")
        return
    bundled = load_checkpoint(GENERATOR_WEIGHTS)
    gan, train = bundled["config"]["gan"], dict(bundled.get("train") or {})
    known = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in train.items() if k in known}
    if base.get("image_encoder"):  # the bundled run's paths are relative to the repository
        encoder = Path(base["image_encoder"])
        encoder = encoder if encoder.is_absolute() else ROOT / encoder
        if encoder.exists():
            base["image_encoder"] = str(encoder)
        else:
            report.notes.append(f"training measured without the image condition ({encoder} not found)")
            base["image_encoder"] = ""
    with tempfile.TemporaryDirectory(prefix="fashiongan-bench-train-") as tmp:
        cfg = TrainConfig(**{**base, "data": str(pack), "data_format": "auto", "limit": 0, "holdout": False,
                             "g_width": gan["g_width"], "d_width": gan["d_width"], "steps": steps + 1,
                             "device": device, "threads": 0, "out": str(Path(tmp) / "run"),
                             "cache_dir": str(Path(tmp) / "cache"), "init_from": "",
                             "sample_every": 10**9, "checkpoint_every": 10**9, "log_every": 10**9})
        say(f"training: {steps} steps, batch {cfg.batch}, widths G{cfg.g_width}/D{cfg.d_width} on {pack.name}")
        trainer = Trainer(cfg)

        def step():
            for _ in range(cfg.n_critic):
                trainer.d_step()
            trainer.g_step()
            trainer.step += 1
            if trainer.device.type == "cuda":
                import torch

                torch.cuda.synchronize()

        seconds = timed(step, steps)
    images = cfg.batch * (cfg.n_critic + 1)
    report.add(Stage("train_img_per_s", "Training throughput (bundled configuration)",
                     round(images * len(seconds) / sum(seconds), 1), "img/s",
                     note=f"{len(seconds)} steps of batch {cfg.batch} (G and {cfg.n_critic} D pass), "
                          f"widths {cfg.g_width}/{cfg.d_width}, "
                          f"{'with' if cfg.image_encoder else 'without'} the image condition, "
                          f"{len(trainer.images)} products"))
