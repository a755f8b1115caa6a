"""Registry of the subcommands that live in feature modules (generation, search, benchmarks...).

Each registrar takes argparse's subparsers object and adds its commands with `set_defaults(func=...)`;
the handler imports its heavy modules itself, so `main.py --help` stays fast.
"""
from __future__ import annotations

from app import detector_eval, generate_cmd, search_cmd

REGISTRARS: list = [generate_cmd.register, detector_eval.register, search_cmd.register]

from app import bench  # noqa: E402 - `main.py bench` (issue 7), kept apart from the lines above

REGISTRARS.append(bench.register)
