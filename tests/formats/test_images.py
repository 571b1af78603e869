"""decode_image: RGB out for every convertible mode, clear reasons for the rest."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from jade.formats.errors import ImageError
from jade.formats.images import decode_image


def test_plain_jpeg(encode_image):
    img = decode_image(encode_image("RGB", (8, 6), "JPEG", (200, 10, 10)))
    assert img.mode == "RGB" and img.size == (8, 6) and img.info["source_mode"] == "RGB"


@pytest.mark.parametrize(
    ("mode", "fmt", "color", "expected"),
    [
        ("CMYK", "JPEG", (0, 255, 255, 0), "red"),
        ("L", "PNG", 128, (128, 128, 128)),
        ("1", "PNG", 1, (255, 255, 255)),
        ("LA", "PNG", (0, 0), (255, 255, 255)),  # fully transparent black → white
        ("RGBA", "PNG", (0, 0, 255, 255), (0, 0, 255)),
        ("RGBA", "PNG", (0, 0, 255, 0), (255, 255, 255)),
        ("I;16", "PNG", 51200, (200, 200, 200)),  # 16-bit grey scaled by 1/256
        ("F", "TIFF", 0.5, (127, 127, 127)),
    ],
)
def test_modes_convert_to_rgb(encode_image, mode, fmt, color, expected):
    img = decode_image(encode_image(mode, (5, 4), fmt, color))
    assert img.mode == "RGB" and img.info["source_mode"] == mode
    pixel = img.getpixel((2, 2))
    if expected == "red":
        assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60
    else:
        assert all(abs(a - b) <= 2 for a, b in zip(pixel, expected, strict=True))


def test_palette_with_transparency_composites_on_white():
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=1)
    img = decode_image(buf.getvalue())
    assert img.info["source_mode"] == "P" and img.getpixel((0, 0)) == (255, 255, 255)
    buf = io.BytesIO()
    pal.save(buf, "GIF")
    assert decode_image(buf.getvalue()).getpixel((0, 0)) == (10, 200, 10)


def test_corrupt_truncated_empty(encode_image):
    with pytest.raises(ImageError, match="^corrupt image: unknown image format"):
        decode_image(b"not an image at all")
    jpeg = encode_image("RGB", (64, 64), "JPEG", (1, 2, 3), quality=95)
    with pytest.raises(ImageError, match="^corrupt image"):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageError, match="^empty image"):
        decode_image(b"")


def test_decompression_bomb_limit(encode_image):
    data = encode_image("L", (400, 300), "PNG")
    with pytest.raises(ImageError, match=r"^decompression bomb: 400x300 \(120000 pixels\)$"):
        decode_image(data, max_pixels=100_000)
    assert decode_image(data, max_pixels=120_000).size == (400, 300)


def test_pillow_guard_kept(monkeypatch, encode_image):
    """Both ways a bomb is caught give one wording: our check of the header (over Pillow's limit, where Pillow
    only warns) and Pillow's own error (over twice its limit, raised before it gives the size)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match=r"^decompression bomb: 40x30 \(1200 pixels\)$"):
        decode_image(encode_image("L", (40, 30), "PNG"))  # 1200 > 1000 (a warning in Pillow)
    for fmt in ("PNG", "JPEG", "GIF"):
        with pytest.raises(ImageError, match=r"^decompression bomb: 100x90 \(9000 pixels\)$"):
            decode_image(encode_image("L", (100, 90), fmt), max_pixels=10**9)  # > 2x: Pillow's error


def test_unconvertible_mode(encode_image):
    with pytest.raises(ImageError, match="^unsupported mode: I"):
        decode_image(encode_image("I", (4, 4), "TIFF", 70000))


def test_a_png_chunk_bomb_has_one_wording():
    """A zTXt chunk that inflates past Pillow's limit (whatever Pillow's own message says)."""
    from PIL import PngImagePlugin

    from jade.formats.images import TEXT_BOMB

    info = PngImagePlugin.PngInfo()
    info.add_text("junk", "a" * (3 * 1024 * 1024), zip=True)  # 3 MB of text in a few KB
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, format="PNG", pnginfo=info)
    with pytest.raises(ImageError) as err:
        decode_image(buf.getvalue())
    assert str(err.value) == TEXT_BOMB
