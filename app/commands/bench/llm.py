"""The language-model stage of `main.py bench --llm-url URL [--llm-model M]`: time to first token and tokens/s.

Each request is a real turn's prompt (`app.chat.llm.build_messages` for the bot's reply to a chat prompt), sent
through the client the app uses (`stream_chat`, stream=true). One untimed warm-up first (the server loads or
warms its model; its first-token time is reported apart: on a fresh server nothing is cached yet). Tokens are
counted as streamed pieces: one token each on llama.cpp's server and Ollama.
Tokens/s leaves out the wait for the first token (prompt processing). The whole reply is timed through
`ReplyWriter.write` as the app uses it (cut after MAX_SENTENCES sentences): what a turn's words add.
"""
from __future__ import annotations

import time

from app.commands.bench.report import Report, Stage, percentile, say

LLM_REQUESTS = 8     # timed requests
BENCH_TOKENS = 64    # tokens asked for per timed request (the app asks for up to llm.MAX_TOKENS, cut at 3 sentences)


def sample_replies(n: int) -> list[tuple[str, object]]:
    """(user text, the bot's reply) pairs like real turns, without the models: chips, images, products."""
    from app.chat.bot import Chip, Reply, ShownImage
    from app.commands.bench.stages import chat_prompts

    out = []
    for prompt in chat_prompts(n):
        words = prompt.removeprefix("a ").split()
        colour, item = words[0].title(), words[1].title()
        products = [{"id": j, "title": f"{colour} {item} {j + 1}", "articleType": item, "baseColour": colour}
                    for j in range(8)]
        out.append((prompt, Reply(f"Looking for: {colour} \u00b7 {item}", "images", headline="Looking for:",
                                  chips=[Chip(colour, "colour"), Chip(item, "item")],
                                  images=[ShownImage(None, s, prompt) for s in range(4)], similar=products)))
    return out


def measure_llm(report: Report, config, requests: int = LLM_REQUESTS) -> None:
    from app.chat import llm

    say(f"language model at {config.where}: {requests} streamed requests ...")
    try:
        models = llm.list_models(config)
    except llm.LLMError as exc:
        report.notes.append(f"language model not measured: {exc.reason}")
        return
    report.details["llm"] = {"server": config.where, "model": config.model or "(the server's)", "models": models}
    turns = sample_replies(requests + 1)
    first, rates, pieces, whole, cold = [], [], [], [], None
    try:
        for i, (text, reply) in enumerate(turns):
            stats = llm.StreamStats()
            for _ in llm.stream_chat(config, llm.build_messages(text, reply), max_tokens=BENCH_TOKENS, stats=stats):
                pass
            if i == 0:
                cold = stats.first_token_s  # warm-up: the whole prompt processed, nothing cached yet
                continue
            first.append(stats.first_token_s)
            pieces.append(stats.pieces)
            if stats.tokens_per_s:
                rates.append(stats.tokens_per_s)
        writer = llm.ReplyWriter(config)
        for text, reply in turns[1:]:
            start = time.perf_counter()
            writer.write(text, reply)
            if writer.problem is not None:
                raise llm.LLMError(f"a reply fell back to the built-in one ({writer.problem})", writer.problem)
            whole.append(time.perf_counter() - start)
    except llm.LLMError as exc:
        report.notes.append(f"language model measured only in part: {exc.reason}")
    if first:
        p50 = percentile(first, 50)
        report.add(Stage("llm_first_token_ms", "Language model: first token (p50)", round(p50 * 1000), "ms",
                         target=f"< {llm.FIRST_TOKEN_S * 1000:g} ms (else the built-in reply)",
                         ok=p50 < llm.FIRST_TOKEN_S,
                         note=f"{len(first)} streamed requests to {config.where} ({config.model or 'its model'}); "
                              f"p95 {percentile(first, 95) * 1000:.0f} ms; the warm-up request "
                              f"{(cold or 0) * 1000:.0f} ms (servers keep the start of the prompt the turns share)"))
    if rates:
        report.add(Stage("llm_tokens_per_s", "Language model: tokens/s while writing (p50)",
                         round(percentile(rates, 50), 1), "tok/s",
                         note=f"{BENCH_TOKENS} tokens asked per request, {sum(pieces) / len(pieces):.0f} streamed on "
                              "average; the first token's wait left out"))
    if whole:
        report.add(Stage("llm_reply_s", "Language model: a turn's words, 1-3 sentences (p50)",
                         round(percentile(whole, 50), 2), "s", note="ReplyWriter.write as the app uses it; the "
                         "images and products show before the words start"))
    report.details.setdefault("llm", {}).update({
        "first_token_cold_ms": None if cold is None else round(cold * 1000),
        "first_token_ms": [round(x * 1000) for x in first], "tokens_per_s": [round(x, 1) for x in rates],
        "pieces": pieces, "reply_s": [round(x, 2) for x in whole]})
