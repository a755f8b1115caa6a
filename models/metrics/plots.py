"""Small PNG charts drawn with Pillow alone (no plotting library to install or bundle):
horizontal grouped bars, line panels, a heatmap and a labelled image grid."""
from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
GRID = (225, 225, 225)
INK = (30, 30, 30)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


FONT, TITLE_FONT = _font(12), _font(15)


def _text_width(draw: ImageDraw.ImageDraw, text: str, font=FONT) -> int:
    return int(draw.textlength(text, font=font))


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _legend(draw, x: int, y: int, names) -> None:
    for i, name in enumerate(names):
        draw.rectangle([x, y + 3, x + 10, y + 13], fill=PALETTE[i % len(PALETTE)])
        draw.text((x + 14, y), name, fill=INK, font=FONT)
        x += 30 + _text_width(draw, name)


def hbar_chart(path: str | Path, labels: list[str], series: dict[str, list[float]], title: str,
               xmax: float = 1.0, xlabel: str = "", marks: dict[str, float] | None = None) -> Path:
    """One row per label, one bar per series; `marks` draws labelled vertical reference lines."""
    bar_h, gap = 9, 8
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 16 + max([_text_width(probe, s) for s in labels] + [40])
    width, top = left + 460, 58
    row_h = bar_h * len(series) + gap
    height = top + row_h * len(labels) + 46
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill=INK, font=TITLE_FONT)
    _legend(draw, 10, 30, series)
    plot_w = width - left - 20
    scale = plot_w / xmax if xmax > 0 else 1.0
    bottom = top + row_h * len(labels)
    for tick in _nice_ticks(0, xmax):
        x = left + tick * scale
        draw.line([x, top, x, bottom], fill=GRID)
        draw.text((x - 8, bottom + 4), f"{tick:g}", fill=INK, font=FONT)
    draw.text((left + plot_w // 2 - _text_width(draw, xlabel) // 2, bottom + 22), xlabel, fill=INK, font=FONT)
    for r, label in enumerate(labels):
        y = top + r * row_h + gap // 2
        label_y = y + (row_h - gap) // 2 - 7
        draw.text((left - 6 - _text_width(draw, label), label_y), label, fill=INK, font=FONT)
        for s, values in enumerate(series.values()):
            v = values[r]
            if v is not None and math.isfinite(v):
                end = left + max(1.0, min(v, xmax) * scale)
                draw.rectangle([left, y + s * bar_h, end, y + (s + 1) * bar_h - 1],
                               fill=PALETTE[s % len(PALETTE)])
    for name, value in (marks or {}).items():
        x = left + min(value, xmax) * scale
        draw.line([x, top - 4, x, bottom], fill=INK, width=1)
        draw.text((x + 3, top - 14), name, fill=INK, font=FONT)
    draw.line([left, top, left, bottom], fill=INK)
    return _save(img, path)


def line_panels(path: str | Path, panels: list[tuple], title: str, xlabel: str = "step") -> Path:
    """Stacked panels, each (panel title, xs, {series name: ys}) or (..., (y_min, y_max)) for a fixed
    y range; non-finite points are skipped."""
    pw, ph, left, top = 640, 190, 64, 40
    img = Image.new("RGB", (pw, top + len(panels) * (ph + 40) + 10), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill=INK, font=TITLE_FONT)
    for p, (name, xs, series, *ylim) in enumerate(panels):
        y0 = top + p * (ph + 40) + 24
        x1, y1 = pw - 16, y0 + ph
        values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        if ylim:
            lo, hi = ylim[0]
        lo, hi = (lo - 0.5, hi + 0.5) if hi == lo else (lo, hi)
        xlo, xhi = (min(xs), max(xs)) if xs else (0, 1)
        xhi = xhi if xhi > xlo else xlo + 1
        sx, sy = (x1 - left) / (xhi - xlo), (y1 - y0) / (hi - lo)
        draw.text((left, y0 - 20), name, fill=INK, font=FONT)
        _legend(draw, left + 20 + _text_width(draw, name), y0 - 20, series)
        for tick in _nice_ticks(lo, hi):
            y = y1 - (tick - lo) * sy
            draw.line([left, y, x1, y], fill=GRID)
            draw.text((4, y - 7), f"{tick:.4g}", fill=INK, font=FONT)
        for tick in _nice_ticks(xlo, xhi):
            x = left + (tick - xlo) * sx
            label = f"{tick:g}"
            draw.text((min(x - 10, pw - 2 - _text_width(draw, label)), y1 + 3), label, fill=INK, font=FONT)
        draw.rectangle([left, y0, x1, y1], outline=INK)
        for s, ys in enumerate(series.values()):
            points = [(left + (x - xlo) * sx, y1 - (min(max(y, lo), hi) - lo) * sy) for x, y in zip(xs, ys)
                      if y is not None and math.isfinite(y)]
            if len(points) > 1:
                draw.line(points, fill=PALETTE[s % len(PALETTE)], width=2)
    draw.text((pw // 2 - 15, img.height - 16), xlabel, fill=INK, font=FONT)
    return _save(img, path)


def heatmap(path: str | Path, matrix, row_labels: list[str], col_labels: list[str], title: str) -> Path:
    """Rows normalised by the caller (e.g. a confusion matrix as shares); cells show the value."""
    cell = 34
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 12 + max([_text_width(probe, s) for s in row_labels] + [30])
    col_h = 12 + max([_text_width(probe, s) for s in col_labels] + [30])
    size = (left + cell * len(col_labels) + 20, 40 + col_h + cell * len(row_labels) + 10)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill=INK, font=TITLE_FONT)
    top = 40 + col_h
    for c, label in enumerate(col_labels):  # vertical column labels
        txt = Image.new("RGB", (_text_width(probe, label) + 4, 16), "white")
        ImageDraw.Draw(txt).text((2, 1), label, fill=INK, font=FONT)
        rotated = txt.rotate(90, expand=True)
        img.paste(rotated, (left + c * cell + cell // 2 - 8, top - 6 - rotated.height))
    for r, label in enumerate(row_labels):
        label_y = top + r * cell + cell // 2 - 7
        draw.text((left - 6 - _text_width(draw, label), label_y), label, fill=INK, font=FONT)
        for c in range(len(col_labels)):
            v = float(matrix[r][c])
            shade = int(255 - 200 * max(0.0, min(v, 1.0)))
            box = [left + c * cell, top + r * cell, left + (c + 1) * cell - 1, top + (r + 1) * cell - 1]
            draw.rectangle(box, fill=(shade, shade, 255), outline=GRID)
            if v >= 0.005:
                text = f"{v:.2f}".lstrip("0")
                draw.text((box[0] + 4, box[1] + 10), text, fill="white" if v > 0.5 else INK, font=FONT)
    return _save(img, path)


def image_grid(path: str | Path, rows: list[list[Image.Image]], row_labels: list[str], title: str,
               column_labels: list[str] | None = None, zoom: int = 2) -> Path:
    """Rows of equal-size tiles (enlarged `zoom` times, pixels kept sharp) with a label left of each
    row and optionally above each column."""
    rows = [[t.resize((t.width * zoom, t.height * zoom), Image.Resampling.NEAREST) for t in r] for r in rows]
    tile = rows[0][0].size if rows and rows[0] else (64, 64)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 12 + max([_text_width(probe, s) for s in row_labels] + [20])
    head = 36 + (42 if column_labels else 0)
    n_cols = max(len(r) for r in rows) if rows else 0
    img = Image.new("RGB", (left + n_cols * (tile[0] + 2) + 8, head + len(rows) * (tile[1] + 2) + 6), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill=INK, font=TITLE_FONT)
    for c, label in enumerate(column_labels or []):
        x = left + c * (tile[0] + 2)
        for i, line in enumerate(_wrap(draw, label, tile[0])[:3]):
            draw.text((x, head - 42 + 13 * i), line, fill=INK, font=FONT)
    for r, (tiles, label) in enumerate(zip(rows, row_labels)):
        y = head + r * (tile[1] + 2)
        draw.text((left - 6 - _text_width(draw, label), y + tile[1] // 2 - 7), label, fill=INK, font=FONT)
        for c, t in enumerate(tiles):
            img.paste(t, (left + c * (tile[0] + 2), y))
    return _save(img, path)


def _wrap(draw, text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and _text_width(draw, candidate) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + ([line] if line else [])


def _save(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
