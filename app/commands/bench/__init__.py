"""`python main.py bench [--json]`: speed, memory and start-up measured on this machine.

Each stage is timed through the code the app runs (ModelService, Bot, Worker; `python main.py` itself
for the window) and next to its *floor*, the bare model work measured in the same run, so overhead
shows as a ratio: a chat turn against detector + text encoder forward + generator forward (4 images)
+ embedding forward and catalogue search; `generate()` against the generator's forward pass; the
window against a bare Tk window. The caption-embedding cache is cleared before every timed request,
so repeated captions cannot flatter the numbers (the hits it still counts happen inside one turn).

With `--llm-url URL [--llm-model M]` (or FASHIONGAN_LLM_URL) the language model that can write the replies is
timed too: time to first token, tokens/s and a turn's words (`llm.py`; `--llm-only` for just those).

The window is measured under a private Xvfb display (or $DISPLAY) with xdotool: `main.py` is started
with a temporary FASHIONGAN_HOME, a request is typed as soon as the window shows, and its log and
history file say when the models were ready and the answer arrived. Without Xvfb/xdotool that part is
skipped with a note. The machine (CPU, cores, GPU, torch threads) and its load average are printed
with the numbers: on a busy machine every stage is slower.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.commands.bench.gui import measure_gui
from app.commands.bench.llm import LLM_REQUESTS, measure_llm
from app.commands.bench.report import (
    TARGET_MEMORY_MB,
    Report,
    Stage,
    load_average,
    machine_info,
    peak_rss_mb,
    render_table,
    say,
)
from app.commands.bench.stages import (
    load_service,
    measure_chat,
    measure_detector,
    measure_encoder,
    measure_generator,
    measure_retrieval,
    measure_training,
    measure_variants,
)
from app.commands.cli import add_llm_options, llm_config
from app.commands.errors import CliError

DEFAULT_TURNS = 50           # chat turns timed; the README table uses at least 50
DEFAULT_REPS = 20            # timed repetitions of each model call (after one warm-up)
TRAIN_STEPS = 3              # timed training steps (after one warm-up step)
GUI_TURNS = 3                # requests typed into the window once the models are ready
GUI_TIMEOUT_S = 600          # longest wait for the window's models and answers (a loaded machine is slow)


def run(args: argparse.Namespace) -> Report:
    from models.sampling import limit_torch_threads

    limit_torch_threads(args.threads)  # as the app decides, unless --threads says otherwise
    report = Report(machine_info(args.device), {"turns": args.turns, "reps": args.reps, "skip_gui": args.skip_gui,
                                                 "skip_train": args.skip_train, "threads": args.threads or "app's"})
    machine = report.machine
    llm = llm_config(args)
    if args.llm_only:
        if llm is None:
            raise CliError("--llm-only needs --llm-url (or FASHIONGAN_LLM_URL)")
        measure_llm(report, llm, args.llm_requests)
        machine["loadavg_end"] = load_average()
        return report
    if machine["loadavg_start"] and machine["loadavg_start"][0] > 0.5 * (machine["usable_cores"] or 1):
        report.notes.append(f"the machine was busy (load average {machine['loadavg_start'][0]} on "
                            f"{machine['usable_cores']} cores): every number is slower than on an idle machine")
    if args.skip_gui:
        report.notes.append("window not measured (--skip-gui)")
    else:
        measure_gui(report, args.gui_turns, args.gui_timeout)
    service = load_service(report, args.device, args.threads)
    say("detector, text encoder, generator, retrieval ...")
    measure_detector(report, service, args.reps)
    measure_encoder(report, service, args.reps)
    measure_generator(report, service, args.reps)
    measure_retrieval(report, service, args.reps)
    measure_variants(report, service, args.reps)
    measure_chat(report, service, args.turns, min(20, args.turns) if args.threads != 1 else 0)
    if llm is not None:
        measure_llm(report, llm, args.llm_requests)
    else:
        report.notes.append("language model not measured (no --llm-url): the chat turns above are the built-in "
                            "replies, as the app gives them by default")
    peak = peak_rss_mb()
    report.add(Stage("service_memory_mb", "Peak resident memory, models + chat (bench process)", round(peak), "MB",
                     target=f"< {TARGET_MEMORY_MB:g} MB", ok=peak < TARGET_MEMORY_MB,
                     note="ru_maxrss before training; the window process is measured separately"))
    if args.skip_train:
        report.notes.append("training not measured (--skip-train)")
    else:
        measure_training(report, args.device, args.train_steps)
    machine["loadavg_end"] = load_average()
    return report


def cmd_bench(args: argparse.Namespace) -> None:
    if args.turns < 1 or args.reps < 1 or args.train_steps < 1:
        raise CliError("--turns, --reps and --train-steps must be at least 1")
    report = run(args)
    data = report.to_dict()
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=1, ensure_ascii=False), flush=True)
    else:
        print(render_table(report), flush=True)


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure start-up, model speed, chat turns, memory and training here",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--out", metavar="FILE", help="also write the JSON results to FILE")
    p.add_argument("--turns", type=int, default=DEFAULT_TURNS, help=f"chat turns to time (default {DEFAULT_TURNS})")
    p.add_argument("--reps", type=int, default=DEFAULT_REPS,
                   help=f"repetitions per model call (default {DEFAULT_REPS})")
    p.add_argument("--skip-gui", action="store_true", help="do not start the window")
    p.add_argument("--skip-train", action="store_true", help="do not time training steps")
    p.add_argument("--gui-turns", type=int, default=GUI_TURNS, help="requests typed into the window")
    p.add_argument("--gui-timeout", type=float, default=GUI_TIMEOUT_S, help="seconds to wait for the window's models")
    p.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help=f"timed training steps (default {TRAIN_STEPS})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device for the models")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: as the app decides: 1 on <= 2 cores)")
    add_llm_options(p, default=argparse.SUPPRESS)
    p.add_argument("--llm-requests", type=int, default=LLM_REQUESTS,
                   help=f"streamed requests timed when a language model is given (default {LLM_REQUESTS})")
    p.add_argument("--llm-only", action="store_true", help="measure only the language model (no app models)")
    p.set_defaults(func=cmd_bench)
