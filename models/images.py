"""Opening images that users upload: checked, decoded once, and always returned as plain RGB.

`open_image(path_or_bytes)` refuses what should not be decoded (a file too large, a format outside
the usual photo formats, a decompression bomb, a truncated or damaged file) with a ValueError whose
message says what is wrong, then applies the EXIF orientation and flattens every mode (CMYK, 16-bit,
palette, greyscale, alpha) to RGB, with transparent areas on white as the catalogue photos are.
"""
from __future__ import annotations

import io
import logging
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 50 * 1024 * 1024  # larger uploads are refused before decoding
MAX_PIXELS = 40_000_000  # width * height; about 7,000 x 5,700; PIL warns at 89 M and refuses at 179 M
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # photo formats only (JPEG covers MPO); no EPS, PSD
WHITE = (255, 255, 255)


def open_image(source, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """A path, bytes or a binary file object -> a decoded RGB PIL image, or ValueError."""
    data, name = _read(source, max_bytes)
    if not data:
        raise ValueError(f"{name} is empty, not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width < 1 or height < 1:
                raise _Refused(f"{name} has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise _Refused(f"{name} is too large: {width}x{height} pixels (at most {max_pixels:,})")
            image.load()
            return to_rgb(_upright(image))
        except _Refused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{name} is too large to decode safely (decompression bomb): {exc}") from exc
        except UnidentifiedImageError as exc:
            kind = _signature(data)
            if kind == "PNG" and data[12:16] == b"IHDR" and len(data) >= 24:
                width, height = struct.unpack(">II", data[16:24])
                if width == 0 or height == 0:  # Pillow refuses to identify it
                    raise ValueError(f"{name} has no pixels ({width}x{height})") from exc
            if kind:  # it says it is a PNG / JPEG / ... but Pillow cannot even read its header
                raise ValueError(f"{name} is a damaged or truncated {kind} file and cannot be decoded") from exc
            raise ValueError(f"{name} is not an image in a supported format ({', '.join(FORMATS)})") from exc
        except ValueError as exc:  # Pillow's own limits, e.g. a PNG text chunk that inflates past 1 MB
            raise ValueError(f"{name} is too large to decode safely or damaged ({exc})") from exc
        except (OSError, SyntaxError, struct.error, EOFError, IndexError, TypeError) as exc:
            raise ValueError(f"{name} is damaged or truncated and cannot be decoded ({exc})") from exc


def _signature(data: bytes) -> str | None:
    """The supported format whose magic bytes `data` starts with, if any (BMP's two letters are too weak)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


class _Refused(ValueError):
    """Our own refusals inside open_image, passed through unchanged."""


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - any EXIF parsing failure only costs the rotation
        log.warning("ignoring unreadable EXIF orientation: %s", exc)
        return image


def _read(source, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the image data"
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        name = getattr(source, "name", "the uploaded file")
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ValueError(f"image not found: {path}")
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{path} is too large: {size / 2**20:.1f} MB (at most {max_bytes / 2**20:.0f} MB)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise ValueError(f"{name} is too large: more than {max_bytes / 2**20:.0f} MB")
    return data, name


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white, 16/32-bit greys scaled to 8 bits."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if image.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBa", "RGBA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
