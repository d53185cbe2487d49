"""Image files as people keep them (issue 23): transparency, bit depth, EXIF orientation, colour
spaces, containers, big JPEGs in draft mode, and damaged or hostile files; pixel values asserted."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import VaeLabError
from dataio import folders
from dataio.decode import HIGH_BYTE_16, SCALED_16, SCALED_32, SCALED_FLOAT, decode_image, parse_background
from datasets import load_split
from helpers import assert_cli_error, run_cli
from tools.odd_images import animation, damaged_files, exif_rotated_jpeg, palette_with_transparency, png_16bit

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def decode(path, background=WHITE, min_side=None):
    return decode_image(str(path), background, min_side)


# ---- transparency


@pytest.mark.parametrize("ext", ["png", "gif"])
@pytest.mark.parametrize("background", [WHITE, BLACK, (10, 20, 30)])
def test_a_transparent_palette_index_shows_the_background_not_the_palette_colour(tmp_path, ext, background):
    path = tmp_path / f"p.{ext}"
    palette_with_transparency(str(path), garbage=(12, 200, 33))
    x, note = decode(path, background)
    assert x.shape == (8, 8, 3) and note is None
    assert (x[:, :4] == background).all()  # never the palette's (12, 200, 33)
    assert (x[:, 4:] == (255, 0, 0)).all()


def test_a_folder_of_palette_icons_has_one_background_under_every_transparent_pixel(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(14):
        palette_with_transparency(str(tmp_path / f"icon{i:02d}.png"), garbage=tuple(rng.integers(0, 256, 3).tolist()))
    for background, rgb in (("white", WHITE), ("0,128,255", (0, 128, 255))):
        x = torch.cat([load_split("folder", str(tmp_path), t, background=background).x for t in (True, False)])
        assert x.shape == (14, 3, 8, 8)
        under = x[:, :, :, :4].permute(0, 2, 3, 1).reshape(-1, 3)
        assert (under == torch.tensor(rgb, dtype=torch.uint8)).all()  # one colour, std 0
        assert (x[:, :, :, 4:].permute(0, 2, 3, 1).reshape(-1, 3) == torch.tensor([255, 0, 0])).all()


def test_rgba_is_composited_by_its_alpha(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 3] = [[0, 128, 255, 255]] * 4  # transparent, half, opaque, opaque
    a[..., :3] = (200, 0, 0)
    a[0, 0, :3] = (1, 2, 3)  # hidden under alpha 0
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    x, _ = decode(tmp_path / "a.png", BLACK)
    assert x[:, 0].tolist() == [[0, 0, 0]] * 4
    assert x[0, 1].tolist() == [100, 0, 0]  # 200 * 128 / 255, rounded
    assert x[0, 2].tolist() == [200, 0, 0]
    x, _ = decode(tmp_path / "a.png", WHITE)
    assert x[0, 1].tolist() == [227, 127, 127]  # (200 * 128 + 255 * 127) / 255, rounded
    assert x[0, 0].tolist() == [255, 255, 255]


def test_grey_with_alpha_stays_grey_on_the_backgrounds_grey_level(tmp_path):
    a = np.zeros((4, 4, 2), np.uint8)
    a[..., 0], a[:, 2:, 1] = 100, 255  # left half transparent
    Image.fromarray(a, "LA").save(tmp_path / "la.png")
    x, _ = decode(tmp_path / "la.png", WHITE)
    assert x.shape == (4, 4) and (x[:, :2] == 255).all() and (x[:, 2:] == 100).all()
    x, _ = decode(tmp_path / "la.png", (0, 0, 255))
    assert (x[:, :2] == 29).all()  # the luma of pure blue: 0.114 * 255
    assert load_split("folder", _folder_of(tmp_path / "la.png", tmp_path / "f"), True).x.shape[1] == 1


def test_a_transparent_grey_level_is_the_background(tmp_path):
    a = np.full((4, 4), 7, np.uint8)
    a[:, 2:] = 90
    Image.fromarray(a).save(tmp_path / "t.png", transparency=7)
    x, _ = decode(tmp_path / "t.png", WHITE)
    assert (x[:, :2] == 255).all() and (x[:, 2:] == 90).all()


def test_background_flag_values():
    assert parse_background("white") == WHITE and parse_background(" Black ") == BLACK
    assert parse_background("0,128,255") == (0, 128, 255)
    for bad in ("grey", "1,2", "0,0,256", "a,b,c"):
        with pytest.raises(ValueError, match="white, black or R,G,B"):
            parse_background(bad)


def test_a_bad_background_is_one_line_and_a_new_one_decodes_again(tmp_path, workdir):
    code, _, err = run_cli(["--dataset_type", "folder", "--data_root", str(tmp_path), "--background", "pink"])
    assert_cli_error(code, err, "--background", "white, black or R,G,B")
    palette_with_transparency(str(tmp_path / "a.png"), garbage=(1, 2, 3))
    palette_with_transparency(str(tmp_path / "b.png"), garbage=(1, 2, 3))
    white = load_split("folder", str(tmp_path), True).x
    black = load_split("folder", str(tmp_path), True, background="black").x
    assert white[0, :, 0, 0].tolist() == [255] * 3 and black[0, :, 0, 0].tolist() == [0] * 3  # not the cache's


# ---- bit depth


def test_16_bit_grey_is_divided_by_257_never_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "g.png")
    Image.fromarray(ramp).save(tmp_path / "g.tif")
    for name in ("g.png", "g.tif"):
        x, note = decode(tmp_path / name)
        assert note == SCALED_16 and x.dtype == np.uint8
        assert np.array_equal(x, np.rint(ramp / 257).astype(np.uint8))
        assert (x == 255).mean() < 0.01  # convert("L") made 99.6% of it white


def test_16_bit_colour_is_read_within_one_level_of_v_over_257(tmp_path):
    ramps = np.meshgrid(np.arange(0, 65536, 4096), np.arange(15, 65536, 4096))
    rgb = np.stack([*ramps, np.full((16, 16), 65535)], -1).astype(np.uint16)
    png_16bit(str(tmp_path / "c.png"), rgb)
    x, note = decode(tmp_path / "c.png")
    assert note == HIGH_BYTE_16 and x.shape == (16, 16, 3)
    assert np.abs(x.astype(int) - np.rint(rgb / 257)).max() <= 1 and (x[..., 2] == 255).all()


def test_32_bit_integer_and_float_images_are_scaled_by_their_range(tmp_path):
    ints = np.arange(16, dtype=np.int32).reshape(4, 4) * 100_000  # 0 .. 1.5e6
    Image.fromarray(ints).save(tmp_path / "i.tif")
    x, note = decode(tmp_path / "i.tif")
    assert note == SCALED_32 and x[0, 0] == 0 and x[3, 3] == 255 and x[1, 3] == round(7 / 15 * 255)
    unit = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(unit).save(tmp_path / "u.tif")
    x, note = decode(tmp_path / "u.tif")
    assert note == SCALED_FLOAT and np.array_equal(x, np.rint(unit * 255).astype(np.uint8))  # [0, 1]: x 255
    hdr = unit * 4  # 0 .. 4: by its range, nothing clipped
    Image.fromarray(hdr).save(tmp_path / "h.tif")
    x, _ = decode(tmp_path / "h.tif")
    assert np.array_equal(x, np.rint(unit * 255).astype(np.uint8))


def test_the_runs_first_line_says_the_images_were_scaled(tmp_path, workdir):
    root = tmp_path / "d"
    root.mkdir()
    for i in range(12):
        Image.fromarray(np.full((8, 8), 1000 * i, np.uint16)).save(root / f"g{i:02d}.png")
    code, out, err = run_cli(["--dataset_type", "folder", "--data_root", str(root), "--epochs", "1", "--batch-size",
                              "4", "--no_cuda", "True", "--num_folds", "2", "--model_type", "fc", "--lognumber", "s",
                              "--tensorboard", "False", "--tensorboard_images", "False"])
    assert code == 0, err
    assert "(12 16-bit images scaled to 8 bits (/257))" in out.splitlines()[0]


# ---- orientation, colour spaces, containers


def test_exif_orientation_is_applied(tmp_path):
    exif_rotated_jpeg(str(tmp_path / "r.jpg"), orientation=6)
    x, _ = decode(tmp_path / "r.jpg")
    assert x.shape == (16, 8, 3)  # shown upright: 8 wide, 16 high
    assert x[:6].mean() < 30 and x[10:].mean() > 225  # the left (black) half is now on top


def test_cmyk_ycbcr_and_lab_come_out_as_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure red in ink
    x, _ = decode(tmp_path / "cmyk.jpg")
    assert np.abs(x.astype(int) - (255, 0, 0)).max() <= 3
    Image.new("YCbCr", (8, 8), (81, 90, 240)).save(tmp_path / "y.tif")  # JPEG's YCbCr of (238, 14, 14)
    x, _ = decode(tmp_path / "y.tif")
    assert np.abs(x.astype(int) - (238, 14, 14)).max() <= 2
    Image.new("LAB", (8, 8), (128, 128, 128)).save(tmp_path / "lab.tif")  # L* 50, a* = b* = 0: mid grey
    x, _ = decode(tmp_path / "lab.tif")
    assert x.shape == (8, 8, 3) and np.abs(x.astype(int) - 119).max() <= 1  # sRGB of L* 50 (convert("RGB"): 0,84,251)


@pytest.mark.parametrize("ext", ["gif", "webp", "tif", "png"])
def test_animations_and_multi_page_files_give_their_first_frame(tmp_path, ext):
    animation(str(tmp_path / f"a.{ext}"), [(250, 0, 0), (0, 0, 250), (0, 250, 0)])
    assert getattr(Image.open(tmp_path / f"a.{ext}"), "n_frames", 1) == 3
    x, _ = decode(tmp_path / f"a.{ext}")
    assert np.abs(x.astype(int) - (250, 0, 0)).max() <= 3


def test_new_extensions_are_read_and_unknown_ones_ignored(tmp_path):
    for i, ext in enumerate(["gif", "tif", "tiff", "webp", "PNG", "jpeg"]):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(tmp_path / f"im{i}.{ext}", **({"lossless": True}
                                                                                  if ext == "webp" else {}))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.ppm")  # an image, but not an extension we list
    (tmp_path / "notes.txt").write_text("hello")
    files, _ = folders.scan_folder(str(tmp_path))
    assert len(files) == 6 and not any(f.endswith((".ppm", ".txt")) for f in files)


def test_progressive_jpeg(tmp_path):
    a = np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 4
    Image.fromarray(a).save(tmp_path / "p.jpg", progressive=True, quality=95)
    x, _ = decode(tmp_path / "p.jpg")
    assert np.abs(x.astype(int) - a).max() <= 4


def test_big_jpegs_are_decoded_in_draft_mode_close_to_a_full_decode(tmp_path):
    yy, xx = np.mgrid[0:768, 0:1024]
    a = np.stack([xx / 4, yy / 3, (xx + yy) / 7], -1).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=90)
    small, _ = decode(tmp_path / "big.jpg", min_side=32)
    assert small.shape == (96, 128, 3)  # 1/8: still >= 2 x 32 on the short side
    assert decode(tmp_path / "big.jpg", min_side=200)[0].shape == (768, 1024, 3)  # 1/2 would leave < 400
    from dataio.reshape import reshape_images

    full = torch.from_numpy(a).permute(2, 0, 1)[None]
    want = reshape_images(full, 32, None)[0]
    got = load_split("folder", _folder_of(tmp_path / "big.jpg", tmp_path / "f", copies=7), True, image_size=32).x[0]
    assert (got.int() - want.int()).abs().float().mean() < 2


def _folder_of(path, folder, copies: int = 2) -> str:
    """A folder holding ``copies`` copies of the file at ``path``."""
    os.makedirs(folder, exist_ok=True)
    data = open(path, "rb").read()
    for i in range(copies):
        open(os.path.join(folder, f"c{i}{os.path.splitext(str(path))[1]}"), "wb").write(data)
    return str(folder)


# ---- damaged and hostile files


def test_unreadable_files_are_skipped_with_a_count_and_why(tmp_path, monkeypatch, capsys):
    root = tmp_path / "d"
    reasons = damaged_files(str(root))
    for i in range(8):
        Image.fromarray(np.full((16, 16), 10 * i, np.uint8)).save(root / f"ok{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 128)  # bomb.png (256 x 256) is over twice this
    train, test = load_split("folder", str(root), True), load_split("folder", str(root), False)
    assert len(train) + len(test) == 8
    assert sorted(torch.cat([train.x, test.x])[:, 0, 0, 0].tolist()) == [10 * i for i in range(8)]
    err = capsys.readouterr().err
    assert f"skipped {len(reasons)} of {len(reasons) + 8} image files under" in err
    line = err.splitlines()[0]
    named = [name for name in reasons if name in line]
    assert len(named) == 3 and all(f"{name} ({reasons[name]}" in line for name in named)
    assert train.notes == [f"{len(reasons)} unreadable image files skipped"]
    # every reason, as _decode_all gives it
    for name, why in reasons.items():
        with pytest.raises(Exception) as e:
            folders._decode(str(root / name), None, WHITE, None)
        assert why in folders._why(e.value, str(root / name)), name


def test_a_folder_of_only_unreadable_files_is_one_line(tmp_path):
    (tmp_path / "a.png").write_text("text")
    open(tmp_path / "b.jpg", "wb").close()
    with pytest.raises(VaeLabError, match=r"none of the 2 image files .* can be read: a.png \(not an image\), "
                                          r"b.jpg \(empty file\)"):
        load_split("folder", str(tmp_path), True)


def test_a_symlink_loop_of_folders_is_walked_once(tmp_path):
    for i in range(7):
        os.makedirs(tmp_path / f"c{i % 2}", exist_ok=True)
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(tmp_path / f"c{i % 2}" / f"{i}.png")
    os.symlink("..", tmp_path / "c0" / "up")  # c0/up -> the root: a loop
    files, _ = folders.scan_folder(str(tmp_path))
    assert len(files) == 7


def test_an_unreadable_sub_folder_is_one_line(tmp_path, monkeypatch):
    for c in ("a", "b"):
        os.makedirs(tmp_path / c)
        Image.new("L", (8, 8)).save(tmp_path / c / "x.png")
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(str(path)) == "b":  # as chmod 000 does (the tests may run as root, where it does not)
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(VaeLabError, match=r"cannot read the folder .*b' \(Permission denied\); fix its permissions"):
        folders.scan_folder(str(tmp_path))
