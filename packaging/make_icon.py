"""Draw the app icon: `python packaging/make_icon.py` writes assets/icons/fashiongan.png (256x256 RGBA).

A rounded tile with a violet-to-teal gradient, a white dress silhouette and a small magnifying glass
(fashion + search). Drawn at 4x and downsampled, so the edges are smooth. PyInstaller converts the PNG
to .ico (Windows) and .icns (macOS) itself when Pillow is installed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256          # final icon size in pixels
SCALE = 4           # supersampling factor for anti-aliased edges
TOP = (108, 76, 214)     # gradient colour at the top (violet)
BOTTOM = (22, 170, 170)  # gradient colour at the bottom (teal)
WHITE = (255, 255, 255, 255)
OUT = Path(__file__).resolve().parents[1] / "assets" / "icons" / "fashiongan.png"


def gradient(size: int) -> Image.Image:
    tile = Image.new("RGBA", (size, size))
    draw = ImageDraw.Draw(tile)
    for y in range(size):
        t = y / (size - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(TOP, BOTTOM))
        draw.line([(0, y), (size, y)], fill=(*colour, 255))
    return tile


def draw_icon(size: int = SIZE) -> Image.Image:
    s = size * SCALE
    u = s / 256  # drawing unit: coordinates below are on a 256 grid

    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).rounded_rectangle([8 * u, 8 * u, 248 * u, 248 * u], radius=52 * u, fill=255)
    icon = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    icon.paste(gradient(s), (0, 0), mask)

    draw = ImageDraw.Draw(icon)
    # Dress: straps, fitted bodice, waist band, flared skirt.
    draw.line([(92 * u, 46 * u), (100 * u, 84 * u)], fill=WHITE, width=round(7 * u))
    draw.line([(140 * u, 46 * u), (132 * u, 84 * u)], fill=WHITE, width=round(7 * u))
    bodice = [(98 * u, 80 * u), (134 * u, 80 * u), (128 * u, 122 * u), (104 * u, 122 * u)]
    draw.polygon(bodice, fill=WHITE)
    skirt = [(104 * u, 128 * u), (128 * u, 128 * u), (176 * u, 212 * u), (56 * u, 212 * u)]
    draw.polygon(skirt, fill=WHITE)
    draw.ellipse([56 * u, 200 * u, 176 * u, 224 * u], fill=WHITE)  # rounded hem

    # Magnifying glass over the lower right corner.
    cx, cy, r = 178 * u, 150 * u, 30 * u
    ring = round(10 * u)
    draw.line([(cx + 20 * u, cy + 20 * u), (cx + 50 * u, cy + 50 * u)], fill=WHITE, width=round(16 * u))
    draw.ellipse([cx - r - ring, cy - r - ring, cx + r + ring, cy + r + ring], fill=WHITE)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(*BOTTOM, 255))
    return icon.resize((size, size), Image.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    parser.add_argument("--size", type=int, default=SIZE, help="edge length in pixels (default 256)")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw_icon(args.size).save(args.out, optimize=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
