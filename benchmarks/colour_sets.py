"""The colour collections benchmarks/colour.py measures, built as class folders (``<out>/<class>/<file>.png``,
what ``--dataset_type folder`` and the folder-trained FID classifier read) from the package archives a user
fetches once with the registry's own client; nothing is downloaded here.

    npm pack emoji-datasource-twitter@16.0.0
    python3 -m benchmarks.colour_sets twemoji data/twemoji_cat emoji-datasource-twitter-16.0.0.tgz
    apt-get download mate-backgrounds plasma-workspace-wallpapers
    python3 -m benchmarks.colour_sets wallpapers data/wallpapers mate-backgrounds_*.deb \\
        plasma-workspace-wallpapers_*.deb

Twemoji: the 64x64 PNGs of ``img/twitter/64/``, each in the folder of the category the package's own
``emoji.json`` gives it (skin-tone variants in their emoji's category); graphics CC-BY 4.0 (Twitter, Inc
and other contributors), the package's code MIT.

Wallpapers: no package of apt, PyPI or npm ships a labelled collection of photographs (CIFAR-10 and the like
are downloaded at run time by every package that names them), so this one is cut from the 24 photographs
among Debian's desktop wallpapers (GPL-2+, attributions in each package's usr/share/doc/<package>/copyright):
each photograph scaled to a short side of 512 and cut into non-overlapping 64x64 tiles (so no test tile
shares a pixel with a training one), its tiles in a folder named after it: the "class" is the photograph.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image

from config.parsers import OneLineParser, run_cli
from core.errors import VaeLabError

TWEMOJI_IMAGES = "package/img/twitter/64/"


def folder_name(category: str) -> str:
    """A category as a folder name: "Smileys & Emotion" -> "smileys_emotion"."""
    return re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")


def twemoji_categories(emoji: list[dict]) -> dict[str, str]:
    """Image file name -> category folder, for every image ``emoji.json`` lists (its skin variants included)."""
    out = {}
    for e in emoji:
        for variant in [e, *(e.get("skin_variations") or {}).values()]:
            out[variant["image"]] = folder_name(e["category"])
    return out


def build_twemoji(archives: list[str], out: str) -> dict[str, int]:
    """Write each 64x64 Twemoji PNG of the npm archive into ``out/<category>/``; images per category."""
    if len(archives) != 1:
        raise VaeLabError(f"twemoji is built from one archive, emoji-datasource-twitter's; got {len(archives)}")
    archive = archives[0]
    try:
        tar = tarfile.open(archive)
    except (OSError, tarfile.TarError) as e:
        raise VaeLabError(f"cannot read {archive!r} as the npm archive of emoji-datasource-twitter: {e}") from None
    with tar:
        try:
            categories = twemoji_categories(json.load(tar.extractfile("package/emoji.json")))
        except KeyError:
            raise VaeLabError(f"{archive!r} has no package/emoji.json: not emoji-datasource-twitter's") from None
        counts: dict[str, int] = {}
        for member in tar.getmembers():
            name = member.name[len(TWEMOJI_IMAGES):]
            if not (member.isfile() and member.name.startswith(TWEMOJI_IMAGES) and name in categories):
                continue
            folder = categories[name]
            os.makedirs(os.path.join(out, folder), exist_ok=True)
            with open(os.path.join(out, folder, name), "wb") as f:  # a new folder: nothing to keep atomic
                f.write(tar.extractfile(member).read())
            counts[folder] = counts.get(folder, 0) + 1
    return dict(sorted(counts.items()))


# the photographs among the wallpapers (drawings and abstract art left out, chosen by eye), per package
MATE_PHOTO = "usr/share/backgrounds/mate/nature/{}.jpg"
PLASMA_PHOTO = "usr/share/wallpapers/{}/contents/images/1920x1080.jpg"
WALLPAPER_PHOTOS = {
    **{n.lower(): MATE_PHOTO.format(n) for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm", "TwoWings",
        "Wood", "YellowFlower")},
    **{n.lower(): PLASMA_PHOTO.format(n) for n in (
        "Autumn", "BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "summer_1am")},
    "colorfulcups": "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg",  # its only size
}
SHORT_SIDE, TILE = 512, 64


def tiles(photo: Image.Image) -> list[np.ndarray]:
    """The photograph scaled to a short side of SHORT_SIDE, cut into non-overlapping TILE x TILE RGB tiles."""
    scale = SHORT_SIDE / min(photo.size)
    a = np.asarray(photo.convert("RGB").resize((round(photo.width * scale), round(photo.height * scale)),
                                               Image.Resampling.LANCZOS))
    return [a[y:y + TILE, x:x + TILE] for y in range(0, a.shape[0] - TILE + 1, TILE)
            for x in range(0, a.shape[1] - TILE + 1, TILE)]


def build_wallpapers(archives: list[str], out: str) -> dict[str, int]:
    """Write the tiles of each photograph of Debian's .deb ``archives`` into ``out/<photograph>/``."""
    with tempfile.TemporaryDirectory() as tmp:
        for deb in archives:
            # dpkg-deb, Debian's own tool, unpacks the .deb (an ar archive of tarballs)
            try:
                done = subprocess.run(["dpkg-deb", "-x", deb, tmp], capture_output=True, text=True)
            except FileNotFoundError:
                raise VaeLabError("building the wallpapers needs dpkg-deb (Debian's dpkg package)") from None
            if done.returncode != 0:
                raise VaeLabError(f"cannot unpack {deb!r} with dpkg-deb: {done.stderr.strip() or 'failed'}")
        missing = [p for p in WALLPAPER_PHOTOS.values() if not os.path.isfile(os.path.join(tmp, p))]
        if missing:
            raise VaeLabError(f"{missing[0]} is not in the given packages: give mate-backgrounds and "
                              "plasma-workspace-wallpapers")
        counts = {}
        for name, path in sorted(WALLPAPER_PHOTOS.items()):
            os.makedirs(os.path.join(out, name))
            with Image.open(os.path.join(tmp, path)) as photo:
                for i, tile in enumerate(tiles(photo)):
                    Image.fromarray(tile).save(os.path.join(out, name, f"{i:04d}.png"))
            counts[name] = i + 1
    return counts


BUILDERS = {"twemoji": build_twemoji, "wallpapers": build_wallpapers}


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.colour_sets", description=__doc__.splitlines()[0])
    p.add_argument("collection", choices=sorted(BUILDERS))
    p.add_argument("out", help="a new folder for the class folders")
    p.add_argument("archives", nargs="+", help="the package archives, as the registry's client fetched them")
    return p


def main(args: argparse.Namespace) -> None:
    if os.path.exists(args.out) and os.listdir(args.out):
        raise VaeLabError(f"{args.out!r} is not empty; give a new folder")
    counts = BUILDERS[args.collection](args.archives, args.out)
    print(f"{sum(counts.values())} images in {len(counts)} classes under {args.out}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
