"""`python main.py bench` runs and reports every stage (no timing is asserted: that is the benchmark's job)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.commands.bench.report import Report, Stage, render_table
from app.commands.bench.stages import chat_prompts

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["load_detector_s", "load_text_encoder_s", "load_generator_s", "load_total_s", "detector_msgs_per_s",
          "encoder_ms", "generator_b1_ms", "generator_b4_ms", "generator_b16_ms", "generator_b16_img_per_s",
          "retrieval_ms", "variants_ms", "chat_turn_p50_ms", "chat_turn_p95_ms", "service_memory_mb"]


def test_bench_json_reports_every_stage():
    done = subprocess.run([sys.executable, "main.py", "bench", "--json", "--skip-gui", "--skip-train", "--turns", "3",
                           "--reps", "2", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    machine = report["machine"]
    for key in ("cpu", "cores", "gpu", "torch", "torch_threads", "loadavg_start", "loadavg_end"):
        assert key in machine, key
    assert machine["torch_threads"] == 1
    for key in STAGES:
        stage = report["stages"][key]
        assert {"label", "value", "unit", "floor", "ratio", "target", "ok", "note"} <= stage.keys()
        assert stage["value"] is not None or stage["note"], key
    variants = report["stages"]["variants_ms"]
    assert variants["value"] > 0 and variants["floor"] > 0 and variants["ok"] in (True, False)
    chat = report["stages"]["chat_turn_p50_ms"]
    assert chat["floor"] > 0 and chat["ratio"] > 0 and chat["ok"] in (True, False)
    details = report["details"]["chat"]
    assert details["turns"] == 3 and details["distinct_prompts"] == 3
    assert details["caption_cache"]["cleared_before_each_turn"] is True
    assert details["caption_cache"]["misses"] >= 3
    assert any("--skip-gui" in n for n in report["notes"]) and any("--skip-train" in n for n in report["notes"])


def test_prompts_are_distinct_requests():
    prompts = chat_prompts(300)
    assert len(set(prompts)) == 300


def test_table_shows_floors_ratios_and_targets():
    report = Report({"time": "now", "cpu": "CPU", "cores": 2, "usable_cores": 2, "memory_gb": 8, "gpu": "none",
                     "device": "cpu", "torch": "2", "torch_threads": 2, "python": "3", "loadavg_start": [0.1]},
                    {})
    report.add(Stage("chat_turn_p50_ms", "Chat turn (p50)", 120.0, "ms", 80.0, "bare model work", "< 150 ms", True))
    report.add(Stage("gen_img_per_s", "Generator images/s", 100.0, "img/s", 200.0, "forward pass only"))
    report.add(Stage("window_visible_s", "Window visible", None, "s", note="not measured"))
    table = render_table(report)
    assert "| Chat turn (p50)" in table and "120 ms" in table and "1.50x" in table and "ok" in table
    assert "2.00x" in table  # a rate's overhead: floor / measured
    assert "not measured" in table
