"""Image files as people keep them, written by the tests: transparency, 16-bit, EXIF rotation,
CMYK, LAB, animations, and damaged files."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image


def palette_with_transparency(path: str, garbage: tuple[int, int, int], size: int = 8) -> None:
    """Left half: palette index 0, transparent, whose palette colour is ``garbage``; right half:
    index 1, opaque red."""
    im = Image.new("P", (size, size), 0)
    im.putpalette([*garbage, 255, 0, 0] + [0, 0, 0] * 254)
    im.paste(1, (size // 2, 0, size, size))
    im.save(path, transparency=0)


def png_16bit(path: str, array: np.ndarray) -> None:
    """``array`` uint16 (H, W) grey or (H, W, 3) RGB as a 16-bit PNG (Pillow writes no 16-bit colour)."""
    h, w = array.shape[:2]
    colour = 2 if array.ndim == 3 else 0
    rows = array.astype(">u2").reshape(h, -1).tobytes()
    raw = b"".join(b"\0" + rows[i * len(rows) // h:(i + 1) * len(rows) // h] for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def exif_rotated_jpeg(path: str, orientation: int = 6) -> None:
    """A 16x8 (wide) JPEG, left half black, right half white, whose EXIF says to show it rotated
    (6: 90 degrees clockwise: then 8 wide and 16 high, black on top)."""
    a = np.zeros((8, 16), np.uint8)
    a[:, 8:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).convert("RGB").save(path, quality=95, exif=exif.tobytes())


def animation(path: str, colours: list[tuple[int, int, int]], size: int = 8) -> None:
    """One frame per colour (GIF, WebP, TIFF by ``path``'s extension)."""
    frames = [Image.new("RGB", (size, size), c) for c in colours]
    kwargs = {"lossless": True} if path.endswith(".webp") else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)


def damaged_files(folder: str) -> dict[str, str]:
    """The hostile files of issue 23 in ``folder``: name -> the reason the loader gives."""
    os.makedirs(folder, exist_ok=True)
    good = os.path.join(folder, "good.png")
    Image.fromarray(np.full((16, 16), 50, np.uint8)).save(good)
    open(os.path.join(folder, "empty.png"), "wb").close()
    with open(os.path.join(folder, "text.png"), "w") as f:
        f.write("this is not an image\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(
        os.path.join(folder, "whole.jpg"), quality=90)
    data = open(os.path.join(folder, "whole.jpg"), "rb").read()
    os.remove(os.path.join(folder, "whole.jpg"))
    open(os.path.join(folder, "truncated.jpg"), "wb").write(data[: len(data) // 2])
    png = bytearray(open(good, "rb").read())
    png[29] ^= 0xFF  # inside IHDR's CRC
    open(os.path.join(folder, "badcrc.png"), "wb").write(bytes(png))
    os.symlink("loop.png", os.path.join(folder, "loop.png"))  # a link to itself
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(os.path.join(folder, "bomb.png"))  # with a low limit
    os.remove(good)
    return {"empty.png": "empty file", "text.png": "not an image", "truncated.jpg": "truncated",
            "badcrc.png": "damaged header", "loop.png": "symbolic links", "bomb.png": "decompression-bomb"}
