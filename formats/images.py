"""Image decoding for web image-text pairs: everything convertible becomes RGB, the rest an ImageError.

`decode_image` keeps Pillow's decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`, or a smaller
`max_pixels`), fully loads the pixels so truncated files are detected, and converts palette, grey,
alpha, CMYK, YCbCr and 16-bit images to RGB (alpha composited on white). The source mode is kept in
`image.info["source_mode"]`. Failure reasons start with "corrupt image:", "decompression bomb:" or
"unsupported mode:"; a decompression bomb is always "decompression bomb: WxH (N pixels)", whether our limit
or Pillow's own error caught it, and a PNG chunk that inflates past Pillow's limit is always `TEXT_BOMB`.
"""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image

from .errors import ImageError

WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_DIRECT_MODES = {"1", "L", "CMYK", "YCbCr", "RGBX", "HSV", "LAB"}


def _limit(max_pixels: int | None) -> int | None:
    limits = [m for m in (max_pixels, Image.MAX_IMAGE_PIXELS) if m]
    return min(limits) if limits else None


def _from_wide_int(img: Image.Image) -> Image.Image:
    """I;16* / I (integer) → L: 16-bit ranges are scaled by 1/256, 8-bit ranges kept as they are."""
    img = img.convert("I")
    low, high = img.getextrema()
    if low < 0 or high > 65535:
        raise ImageError(f"unsupported mode: {img.mode} with values in [{low}, {high}]")
    if high > 255:
        img = img.point(lambda v: v * (1 / 256))
    return img.convert("L")


def _from_float(img: Image.Image) -> Image.Image:
    """F → L for values in [0, 1] (scaled by 255) or [0, 255]; anything else is ambiguous."""
    low, high = img.getextrema()
    if low < 0 or high > 255:
        raise ImageError(f"unsupported mode: F with values in [{low}, {high}]")
    if high <= 1.0:
        img = img.point(lambda v: v * 255)
    return img.convert("L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any convertible mode to RGB (alpha composited on white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        has_alpha = "transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA"
        return to_rgb(img.convert("RGBA")) if has_alpha else img.convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I"):
        return _from_wide_int(img).convert("RGB")
    if mode == "F":
        return _from_float(img).convert("RGB")
    if mode in _DIRECT_MODES:
        try:
            return img.convert("RGB")
        except ValueError as exc:
            raise ImageError(f"unsupported mode: {mode} ({exc})") from None
    raise ImageError(f"unsupported mode: {mode}")


TEXT_BOMB = "decompression bomb: a compressed chunk (text or ICC profile) over Pillow's limit"


def _bomb(size: tuple[int, int] | None, pixels: str | None = None) -> ImageError:
    """The one wording of a decompression bomb: "decompression bomb: WxH (N pixels)"."""
    if size is None:
        return ImageError(f"decompression bomb: ?x? ({pixels or '?'} pixels)")
    return ImageError(f"decompression bomb: {size[0]}x{size[1]} ({size[0] * size[1]} pixels)")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """An image's size from its header, without Pillow's bomb check (which raises before it gives the size):
    the format plugins' own openers, as `Image.open` calls them."""
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            if accept is not None and not accept(prefix):
                continue
            return factory(io.BytesIO(data), "").size
        except Exception:  # noqa: BLE001 - not this format; try the next
            continue
    return None


def decode_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode image bytes to a fully loaded RGB image, or raise `ImageError(reason)`.

    `max_pixels` lowers the decompression-bomb limit below `Image.MAX_IMAGE_PIXELS` (never raises it).
    Animated images give their first frame. `image.info["source_mode"]` holds the original mode.
    """
    if not data:
        raise ImageError("empty image")
    limit = _limit(max_pixels)
    size = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        width, height = size = img.size
        if limit is not None and width * height > limit:
            raise _bomb(size)
        img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # over twice Pillow's limit: Image.open raises before it gives the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _bomb(size or _header_size(data), found.group(1) if found else None) from None
    except ValueError as exc:
        if "decompressed" in str(exc).lower():  # PNG text or ICC chunks that inflate past Pillow's limit
            raise ImageError(TEXT_BOMB) from None
        raise ImageError(f"corrupt image: ValueError: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("corrupt image: unknown image format") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, EOFError, ...
        raise ImageError(f"corrupt image: {type(exc).__name__}: {exc}") from None
    if width <= 0 or height <= 0:
        raise ImageError(f"corrupt image: size {width}x{height}")
    source_mode = img.mode
    try:
        rgb = to_rgb(img)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"unsupported mode: {source_mode} ({type(exc).__name__}: {exc})") from None
    rgb.info["source_mode"] = source_mode
    return rgb
