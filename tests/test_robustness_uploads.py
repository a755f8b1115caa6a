"""Uploads: a corpus of bad and unusual image files, made here, each used correctly or refused clearly.

Every file goes through `models.images.open_image` (and so `app.gui.window.open_upload`), then the
window's own paths without Tk: the chat's attach job (open_upload, then `Bot.respond_image` on the
real ModelService) and the Upload tab's describe. A usable file must come out as RGB with the right
content (EXIF rotation applied, transparency on white, 16-bit and CMYK colours kept) and as the right
64x64 model input; a bad one must be refused with a ValueError that names the file and says what is
wrong. After each file a normal request must still be answered with images.
"""
from __future__ import annotations

import io
import resource
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from robustness_support import counting, gui_bot, real_service, torch_threads

from models.data import square_on_white
from models.images import open_image

RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
TOLERANCE = 40          # JPEG and resampling move colours a little
BOMB_SIDE = 20_000      # the "decompression bomb" claims 20,000 x 20,000 pixels
BOMB_CPU_S = 5.0        # CPU seconds allowed to refuse a bomb (well under 1 s measured)
BOMB_MEMORY_MB = 300    # growth of this process's peak memory allowed while refusing a bomb


@pytest.fixture
def tally(request):
    yield from counting(request)


# ------------------------------------------------------------------------------------------- the corpus


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows) -> bytes:
    """A PNG written by hand: `rows` yields each scanline's bytes (the filter byte is added here)."""
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(b"\x00" + row) for row in rows) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def halves(size=(80, 40), left=RED, right=BLUE, mode="RGB") -> Image.Image:
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(halves(), "JPEG", quality=95, exif=exif.tobytes())


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    at = data.index(b"\xff\xc0")  # baseline SOF0: marker, length, precision, height, width
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def patch_gif_size(data: bytes, width: int, height: int) -> bytes:
    data = bytearray(data)
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    at = data.index(b"\x2c")  # the first image descriptor: separator, left, top, width, height
    data[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def ztxt_bomb() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * 64_000_000, zip=True)  # 64 MB of text in about 60 KB
    return encode(Image.new("RGB", (8, 8), RED), "PNG", pnginfo=info)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), RED), Image.new("RGB", (40, 40), BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rgba_with_holes() -> Image.Image:
    """Left third opaque red, middle third red at half opacity, right third transparent *black*."""
    image = Image.new("RGBA", (60, 60), (255, 0, 0, 255))
    image.paste((255, 0, 0, 128), (20, 0, 40, 60))
    image.paste((0, 0, 0, 0), (40, 0, 60, 60))
    return image


def palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 40), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(0, (20, 0, 40, 40))  # right half: index 0, transparent
    return encode(image, "PNG", transparency=0)


@dataclass
class Case:
    name: str                 # file name, extension included
    data: object              # bytes, a function making them (big ones), or None (made by the fixture)
    refuse: str | None = None  # words naming the problem, which the refusal must contain; None: usable
    check: object = None      # image -> list of problems (for usable files)
    bomb: bool = False
    editable: str | None = None  # for a usable file with no item in it: the words of the variants' refusal


def colour_at(image: Image.Image, xy, expected, what: str) -> list[str]:
    got = image.getpixel(xy)
    if max(abs(a - b) for a, b in zip(got, expected)) > TOLERANCE:
        return [f"{what}: pixel {xy} is {got}, expected about {expected}"]
    return []


def expect(size=None, **points):
    """A check: optional (width, height), then name=((x, y), colour) pairs on the decoded image."""

    def check(image: Image.Image) -> list[str]:
        problems = [] if size is None or image.size == size else [f"size {image.size}, expected {size}"]
        for name, (xy, colour) in points.items():
            problems += colour_at(image, xy, colour, name)
        return problems

    return check


def corpus() -> list[Case]:
    good_png = encode(halves(), "PNG")
    good_jpeg = encode(halves(), "JPEG", quality=95)
    progressive = encode(halves((200, 120)), "JPEG", quality=90, progressive=True)
    bad_crc = bytearray(good_png)
    bad_crc[29] ^= 0xFF  # inside the IHDR chunk's CRC
    grey16 = Image.fromarray(np.full((40, 60), 32768, np.uint16))
    cmyk = Image.new("CMYK", (60, 40), (0, 255, 255, 0))  # red in CMYK
    return [
        # refused
        Case("empty.png", b"", "empty"),
        Case("empty.jpg", b"", "empty"),
        Case("notes.jpg", b"these are my notes, not a photo\n" * 20, "not an image"),
        Case("page.png", b"<!DOCTYPE html><html><body>hello</body></html>", "not an image"),
        Case("drawing.svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not an image"),
        Case("truncated-half.png", good_png[: len(good_png) // 2], "damaged or truncated"),
        Case("truncated-header.png", good_png[:8], "damaged or truncated PNG"),
        Case("truncated-half.jpg", good_jpeg[: len(good_jpeg) // 2], "damaged or truncated"),
        Case("truncated-header.jpg", good_jpeg[:20], "damaged or truncated JPEG"),
        Case("truncated-progressive.jpg", progressive[: len(progressive) * 2 // 3], "damaged or truncated"),
        Case("bad-crc.png", bytes(bad_crc), "damaged or truncated PNG"),
        Case("png-signature-then-noise.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "damaged or truncated PNG"),
        Case("zero-width.png", raw_png(0, 10, 8, 2, []), "no pixels (0x10)"),
        Case("bomb-header-only.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(
            ">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 2, 0, 0, 0)) + png_chunk(b"IEND", b""), "too large", bomb=True),
        Case("bomb-20000x20000.png", lambda: raw_png(BOMB_SIDE, BOMB_SIDE, 1, 0, (bytes(BOMB_SIDE // 8)
                                                                            for _ in range(BOMB_SIDE))),
             "too large", bomb=True),
        Case("bomb-20000x20000.jpg", patch_jpeg_size(good_jpeg, BOMB_SIDE, BOMB_SIDE), "too large", bomb=True),
        Case("bomb-30000x30000.gif", patch_gif_size(encode(Image.new("P", (8, 8)), "GIF"), 30_000, 30_000),
             "too large", bomb=True),
        Case("text-bomb.png", ztxt_bomb, "too large", bomb=True),
        Case("vector.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an image"),
        Case("layers.psd", b"8BPS\x00\x01" + bytes(20), "not an image"),
        Case("icon.ico", encode(Image.new("RGB", (16, 16), RED), "ICO"), "not an image"),
        Case("folder.jpg", None, "not a file"),
        Case("missing.jpg", None, "not found"),
        Case("huge-file.jpg", None, "too large"),
        # used
        Case("plain.png", good_png, check=expect((80, 40), left=((10, 20), RED), right=((70, 20), BLUE))),
        Case("plain.jpg", good_jpeg, check=expect((80, 40), left=((10, 20), RED), right=((70, 20), BLUE))),
        Case("jpeg-with-trailing-junk.jpg", good_jpeg + b"\x00junk" * 100,
             check=expect((80, 40), left=((10, 20), RED))),
        Case("exif-rotate-90.jpg", exif_jpeg(6), check=expect((40, 80), top=((20, 10), RED), bottom=((20, 70), BLUE))),
        Case("exif-rotate-270.jpg", exif_jpeg(8), check=expect((40, 80), top=((20, 10), BLUE),
                                                                bottom=((20, 70), RED))),
        Case("exif-rotate-180.jpg", exif_jpeg(3), check=expect((80, 40), left=((10, 20), BLUE),
                                                                right=((70, 20), RED))),
        Case("exif-mirrored.jpg", exif_jpeg(2), check=expect((80, 40), left=((10, 20), BLUE), right=((70, 20), RED))),
        Case("exif-garbage.jpg", good_jpeg[:2] + b"\xff\xe1\x00\x10Exif\x00\x00garbage!" + good_jpeg[2:],
             check=expect((80, 40), left=((10, 20), RED))),
        Case("cmyk.jpg", encode(cmyk, "JPEG", quality=95), check=expect((60, 40), centre=((30, 20), RED))),
        Case("cmyk.tiff", encode(cmyk, "TIFF"), check=expect((60, 40), centre=((30, 20), RED))),
        Case("grey-16bit.png", encode(grey16, "PNG"), check=expect((60, 40), centre=((30, 20), (128, 128, 128)))),
        Case("grey-16bit.tiff", encode(grey16, "TIFF"), check=expect((60, 40), centre=((30, 20), (128, 128, 128)))),
        Case("rgb-16bit.png", raw_png(30, 20, 16, 2, (b"\xff\xff\x00\x00\x00\x00" * 30 for _ in range(20))),
             check=expect((30, 20), centre=((15, 10), RED))),
        Case("palette.png", encode(halves(mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG"),
             check=expect((80, 40), left=((10, 20), RED), right=((70, 20), BLUE))),
        Case("palette-transparent.png", palette_with_transparency(),
             check=expect((40, 40), opaque=((5, 20), RED), transparent=((35, 20), WHITE))),
        Case("rgba.png", encode(rgba_with_holes(), "PNG"),
             check=expect((60, 60), opaque=((10, 30), RED), half=((30, 30), (255, 127, 127)),
                          transparent=((50, 30), WHITE))),
        Case("grey-alpha.png", encode(Image.merge("LA", [Image.new("L", (40, 40), 30), halves(
            (40, 40), 255, 0, mode="L")]), "PNG"), check=expect((40, 40), opaque=((5, 20), (30, 30, 30)),
                                                                transparent=((35, 20), WHITE))),
        Case("bilevel.png", encode(halves((40, 40), 0, 1, mode="1"), "PNG"),
             check=expect((40, 40), left=((5, 20), BLACK), right=((35, 20), WHITE))),
        Case("grey.jpg", encode(Image.new("L", (40, 40), 200), "JPEG"),
             check=expect((40, 40), c=((20, 20), (200,) * 3)), editable="one flat colour"),
        Case("animated.gif", animated_gif(), check=expect((40, 40), first_frame=((20, 20), RED)),
             editable="one flat colour"),
        Case("photo.webp", encode(halves(), "WEBP", quality=95), check=expect((80, 40), left=((10, 20), RED))),
        Case("photo.bmp", encode(halves(), "BMP"), check=expect((80, 40), left=((10, 20), RED))),
        Case("one-pixel.png", encode(Image.new("RGB", (1, 1), BLUE), "PNG"), check=expect((1, 1), p=((0, 0), BLUE)),
             editable="one flat colour"),
        Case("strip-4000x1.png", encode(Image.new("RGB", (4000, 1), RED), "PNG"), check=expect((4000, 1)),
             editable="no item to edit"),
        Case("tall-1x3000.png", encode(Image.new("RGB", (1, 3000), RED), "PNG"), check=expect((1, 3000)),
             editable="no item to edit"),
        Case("wrong-extension.gif", good_png, check=expect((80, 40), left=((10, 20), RED))),
    ]


CORPUS = corpus()
REFUSED = [c.name for c in CORPUS if c.refuse]
USED = [c.name for c in CORPUS if not c.refuse]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    paths = {}
    for case in CORPUS:
        path = folder / case.name
        if callable(case.data):
            path.write_bytes(case.data())
        elif case.data is not None:
            path.write_bytes(case.data)
        elif case.name == "folder.jpg":
            path.mkdir()
        elif case.name == "huge-file.jpg":
            with open(path, "wb") as fh:  # sparse: 60 MB on paper, nothing on disk
                fh.write(encode(Image.new("RGB", (8, 8)), "JPEG"))
                fh.truncate(60 * 2**20)
        paths[case.name] = path
    return paths


def by_name(name: str) -> Case:
    return next(c for c in CORPUS if c.name == name)


def model_input_problems(case: Case, image: Image.Image) -> list[str]:
    """The 64x64 picture the models see (padded square on white): right size and mode, corners white
    for non-square images, and the centre column keeps the item's colours."""
    small = square_on_white(image)
    problems = [] if small.size == (64, 64) and small.mode == "RGB" else [f"model input {small.size} {small.mode}"]
    if image.width != image.height and min(image.size) >= 8:
        problems += colour_at(small, (0, 0), WHITE, "padding corner")
    return problems


# ------------------------------------------------------------------------------------------- open_image


@pytest.mark.parametrize("name", REFUSED)
def test_bad_file_is_refused_with_a_clear_message(files, tally, name):
    case, path = by_name(name), files[name]
    tally.fault()
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.process_time()
    try:
        image = open_image(path)
    except ValueError as exc:
        message = str(exc)
        tally.check(case.refuse.lower() in message.lower(), f"{name}: message {message!r} lacks {case.refuse!r}")
        tally.check(name in message, f"{name}: message {message!r} does not name the file")
    except Exception as exc:  # noqa: BLE001 - anything else would reach the user as a crash
        tally.check(False, f"{name}: {type(exc).__name__} instead of ValueError: {exc}")
    else:
        tally.check(False, f"{name}: accepted as a {image.size} {image.mode} image")
    cpu = time.process_time() - start
    if case.bomb:
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_mb
        tally.check(cpu < BOMB_CPU_S, f"{name}: {cpu:.1f} CPU s to refuse")
        tally.check(grown < BOMB_MEMORY_MB, f"{name}: peak memory grew {grown:.0f} MB while refusing it")
    tally.assert_ok()


@pytest.mark.parametrize("name", USED)
def test_usable_file_is_decoded_right(files, tally, name):
    case, path = by_name(name), files[name]
    tally.tried()
    for source in (path, path.read_bytes()):  # a path (the window) and bytes (the service API)
        try:
            image = open_image(source)
        except Exception as exc:  # noqa: BLE001
            tally.check(False, f"{name}: refused: {type(exc).__name__}: {exc}")
            continue
        tally.check(image.mode == "RGB", f"{name}: mode {image.mode}")
        for problem in case.check(image) + model_input_problems(case, image):
            tally.check(False, f"{name}: {problem}")
    tally.assert_ok()


# ------------------------------------------------------------------------------------------- the window's paths


@pytest.fixture(scope="module")
def service():
    with torch_threads(1):
        yield real_service()


def attach(bot, path: Path, text: str = ""):
    """app.gui.window.App.attach_path's job, without Tk."""
    from app.chat.bot import Reply
    from app.gui.window import open_upload

    try:
        image = open_upload(str(path))
    except ValueError as exc:
        return Reply(f"I couldn't use that file: {exc}", "error")
    return bot.respond_image(image, text, path.name)


def test_every_file_through_the_chat_and_upload_tab(service, files, tally):
    """Each file attached in the chat (with a change, "in red") and opened in the Upload tab; after each,
    a normal request is still answered with images, and the bad files never reach the models."""
    from app.gui.window import open_upload

    bot = gui_bot(service)
    for case in CORPUS:
        path = files[case.name]
        if case.refuse:
            tally.fault()
        else:
            tally.tried()
        try:
            reply = attach(bot, path, "in red")
        except Exception as exc:  # noqa: BLE001 - the worker would show "Sorry, that went wrong"
            tally.check(False, f"{case.name}: the attach job raised {type(exc).__name__}: {exc}")
            continue
        if case.refuse:
            tally.check(reply.kind == "error" and reply.text.startswith("I couldn't use that file")
                        and case.name in reply.text and case.refuse.lower() in reply.text.lower(),
                        f"{case.name}: reply {reply.kind} {reply.text[:200]!r} (should say {case.refuse!r})")
        elif case.editable:  # a valid image with no product in it: no variants, and the reason why
            tally.check(reply.kind == "error" and reply.text.startswith("I can't make variants of this photo")
                        and case.editable in reply.text, f"{case.name}: reply {reply.kind} {reply.text[:200]!r}")
        else:
            tally.check(reply.kind == "images" and len(reply.images) == 4, f"{case.name}: reply {reply.kind} "
                        f"with {len(reply.images)} images: {reply.text[:200]!r}")
            tally.check(all(im.image.size == (64, 64) and im.image.mode == "RGB" for im in reply.images),
                        f"{case.name}: variant images are not 64x64 RGB")
            tally.check("red" in (reply.caption or "").lower(), f"{case.name}: 'in red' not applied: {reply.caption}")
            described = service.describe_image(open_upload(str(path)))  # the Upload tab's preview
            tally.check(bool(described.get("articleType")) and bool(described.get("caption")),
                        f"{case.name}: describe_image gave {described}")
        after = bot.respond(f"a blue shirt for men, try {len(tally.problems)}")
        tally.check(after.kind == "images" and len(after.images) == 4,
                    f"after {case.name}: a normal request got {after.kind}: {after.text[:200]!r}")
    tally.assert_ok()


@pytest.mark.parametrize("name", ["notes.jpg", "truncated-half.png", "bomb-20000x20000.png", "empty.jpg",
                                  "truncated-header.jpg", "zero-width.png"])
def test_service_refuses_bad_files_by_name(service, files, tally, name):
    """The service API takes paths and bytes too: a bad one is a ValueError naming the file, before any model."""
    tally.fault()
    for method in (service.describe_image, lambda p: service.variants(p, "in red"),
                   lambda p: service.similar_to_image(p, "")):
        try:
            method(str(files[name]))
        except ValueError as exc:
            tally.check(name in str(exc) and by_name(name).refuse in str(exc), f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001
            tally.check(False, f"{name}: {type(exc).__name__}: {exc}")
        else:
            tally.check(False, f"{name}: accepted by the service")
    tally.assert_ok()
