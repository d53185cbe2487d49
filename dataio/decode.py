"""One image file as people keep them, made 8-bit grey or RGB the same way every time.

- Transparency (an alpha channel, a transparent palette index or grey/RGB value): composited onto
  one background colour (``--background``), so a model never sees the colours a file hides under
  its transparent pixels; grey + alpha stays grey (on the background's luma).
- Bit depth: 16-bit integers are divided by 257 (65535 -> 255); 32-bit integers and floats are
  scaled by their range (floats in [0, 1] by 255, others from min(0, lowest) .. highest to 0 .. 255);
  never clipped. 16-bit colour PNGs and TIFFs are read by Pillow at their high byte (v // 256,
  within one level of v / 257). Each such image gets a note, which the run's first line reports.
- EXIF orientation applied; CMYK, YCbCr, HSV and palette images converted to RGB by Pillow, CIE
  LAB through a colour profile (Pillow's plain convert treats L*a*b* as if it were RGB).
- Animated GIF, WebP, PNG and multi-page TIFF: the first frame.
- Big JPEGs: decoded at a reduced size (the decoder's draft mode: 1/2, 1/4 or 1/8 in the DCT) that
  keeps at least twice the final side (DRAFT_MARGIN), before the antialiased resize.
- ``max_bytes`` (the explorer's uploads; training's folders never pass it): the memory a decode may take is
  bounded by what it produces, not by the file (a 5 KB PNG can hold 40 M pixels). The image is refused
  (ImageTooLarge) when Pillow's decoded image alone would pass ``max_bytes``; else it is converted a band of
  rows at a time, each band box-reduced (Pillow's ``reduce``) towards DRAFT_MARGIN x the final side, so the
  conversion's temporaries (RGBA, 32-bit compositing) never exist for the whole image.
"""
from __future__ import annotations

import numpy as np

# --background: the colour under transparent pixels
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
# the notes decode_image returns (the loader counts them for the run's first line)
SCALED_16 = "16-bit images scaled to 8 bits (/257)"
HIGH_BYTE_16 = "16-bit colour images read at their high byte"
SCALED_32 = "32-bit integer images scaled to 8 bits by their range"
SCALED_FLOAT = "floating-point images scaled to 8 bits by their range"
# draft mode keeps at least this many times the final side, so the antialiased resize still has pixels to average
DRAFT_MARGIN = 2
# max_bytes: pixels converted at once (a band of rows); the conversion's temporaries are ~40 bytes a pixel
BAND_PIXELS = 2**19
# EXIF orientation -> the Pillow transpose that undoes it (the table of ImageOps.exif_transpose, which works on
# an image, not on the small array the bounded decode ends with)
ORIENTATIONS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}


class ImageTooLarge(ValueError):
    """An image whose decode would take more memory than the caller allows."""


def parse_background(text: str) -> tuple[int, int, int]:
    """``white``, ``black`` or ``R,G,B`` (0..255 each) as an RGB triple; ValueError otherwise."""
    name = str(text).strip().lower()
    if name in BACKGROUNDS:
        return BACKGROUNDS[name]
    parts = name.split(",")
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"expected white, black or R,G,B with each 0..255, got {text!r}")
    return rgb  # type: ignore[return-value]


def _luma(rgb: tuple[int, int, int]) -> int:
    """ITU-R 601 luma, as Pillow's "L"."""
    return int(round((rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000))


def _composite(colour: np.ndarray, alpha: np.ndarray, background: tuple[int, ...]) -> np.ndarray:
    """``colour`` (H, W, C) over ``background`` by ``alpha`` (H, W), all uint8, rounded."""
    a = alpha.astype(np.uint32)[..., None]
    bg = np.asarray(background, np.uint32)
    return ((colour.astype(np.uint32) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


def _scale_to_8_bits(a: np.ndarray, note: str) -> tuple[np.ndarray, str]:
    """An integer or float plane scaled to uint8 (never clipped) and the note saying how."""
    a = a.astype(np.float64)
    if note == SCALED_16:
        return np.rint(a / 257).astype(np.uint8), note
    a = np.nan_to_num(a, nan=0.0, posinf=np.nanmax(a[np.isfinite(a)], initial=0.0),
                      neginf=np.nanmin(a[np.isfinite(a)], initial=0.0))
    lo, hi = min(0.0, float(a.min())), float(a.max())
    if note == SCALED_FLOAT and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0  # the float convention: 0 black, 1 white
    if hi <= lo:
        return np.zeros(a.shape, np.uint8), note
    return np.rint((a - lo) * (255 / (hi - lo))).astype(np.uint8), note


def _lab_to_rgb(im):
    from PIL import ImageCms

    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return ImageCms.applyTransform(im, transform)


def decoded_bytes(im) -> int:
    """The bytes Pillow's decoded image takes (known from the header): a byte a pixel for 1, L and P, two for the
    16-bit greys, four for every other mode (Pillow keeps 3-channel pixels in 4 bytes)."""
    per_pixel = 1 if im.mode in ("1", "L", "P") else 2 if im.mode.startswith("I;16") else 4
    return im.size[0] * im.size[1] * per_pixel


def decode_image(path, background: tuple[int, int, int] = BACKGROUNDS["white"],
                 min_side: int | None = None, max_bytes: int | None = None) -> tuple[np.ndarray, str | None]:
    """``path`` (a file name or a file object) as uint8 (H, W) grey or (H, W, 3) RGB, and a note when its bit
    depth was scaled. ``min_side``: the side the image will be resized to (JPEGs may then be decoded smaller).
    ``max_bytes``: decode within about this much memory, reduced towards DRAFT_MARGIN x ``min_side`` (module
    docstring); ImageTooLarge if it cannot be."""
    from PIL import Image, ImageOps  # here: only folders decode images

    with Image.open(path) as im:
        if min_side and im.format == "JPEG" and min(im.size) >= 2 * DRAFT_MARGIN * min_side:
            im.draft(None, (DRAFT_MARGIN * min_side, DRAFT_MARGIN * min_side))
        args = im.tile[0].args if im.tile else ""
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        if max_bytes is not None:
            return _decode_bounded(im, background, rawmode, min_side, max_bytes)
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: rotate / flip as the camera meant
            im = ImageOps.exif_transpose(im)
        else:
            im.load()
        return _to_8_bits(im, background, rawmode)


def _decode_bounded(im, background: tuple[int, int, int], rawmode: str, min_side: int | None,
                    max_bytes: int) -> tuple[np.ndarray, str | None]:
    """decode_image within ``max_bytes``: decoded in the file's own mode, converted and box-reduced by bands."""
    from PIL import Image

    w, h = im.size
    # I and F are scaled by the whole image's range, so they are converted whole: ~40 bytes a pixel more
    need = decoded_bytes(im) + (w * h * 40 if im.mode in ("I", "F") else 0)
    if need > max_bytes:
        raise ImageTooLarge(f"{w}x{h} {im.mode} would take {need / 2**20:,.0f} MiB to decode; "
                            f"at most {max_bytes / 2**20:,.0f} MiB")
    orientation = im.getexif().get(0x0112, 1)
    im.load()
    factor = max(1, min(w, h) // (DRAFT_MARGIN * min_side)) if min_side else 1

    def reduced(a: np.ndarray) -> np.ndarray:
        return a if factor == 1 else np.asarray(Image.fromarray(a).reduce(factor))

    if im.mode in ("I", "F"):
        a, note = _to_8_bits(im, background, rawmode)
        parts = [reduced(a)]
    else:  # bands of whole reduce boxes: the same pixels as reducing the whole image
        rows = max(factor, BAND_PIXELS // w // factor * factor)
        parts = []
        for top in range(0, h, rows):
            a, note = _to_8_bits(im.crop((0, top, w, min(h, top + rows))), background, rawmode)
            parts.append(reduced(a))
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if orientation in ORIENTATIONS:  # on the small result: a transposed copy of the whole image is not made
        out = np.asarray(Image.fromarray(out).transpose(getattr(Image.Transpose, ORIENTATIONS[orientation])))
    return out, note


def _to_8_bits(im, background: tuple[int, int, int], rawmode: str = "") -> tuple[np.ndarray, str | None]:
    mode, info = im.mode, im.info
    note = HIGH_BYTE_16 if ";16" in str(rawmode) and mode in ("RGB", "RGBA", "LA") else None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _scale_to_8_bits(np.asarray(im), SCALED_16)
    if mode == "I":
        return _scale_to_8_bits(np.asarray(im), SCALED_32)
    if mode == "F":
        return _scale_to_8_bits(np.asarray(im), SCALED_FLOAT)
    if mode == "1":
        return np.asarray(im.convert("L")), note
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in info else "RGB")
    elif mode in ("PA", "RGBa", "RGBX"):
        im = im.convert("RGBA" if mode != "RGBX" else "RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode in ("L", "RGB") and info.get("transparency") is not None:  # one grey level / colour is transparent
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "LAB":
        im = _lab_to_rgb(im)
    elif mode not in ("L", "LA", "RGB", "RGBA"):  # CMYK, YCbCr, HSV
        im = im.convert("RGB")
    a = np.asarray(im)
    if im.mode == "LA":
        return _composite(a[..., :1], a[..., 1], (_luma(background),))[..., 0], note
    if im.mode == "RGBA":
        return _composite(a[..., :3], a[..., 3], background), note
    return a, note
