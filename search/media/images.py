"""Decoding images from files or bytes into oriented RGB, within explicit limits.

Used by the indexer's decode workers and by image queries, so that an upload
and an indexed file of the same picture produce the same pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import filetype
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from xmodal.search.errors import MediaDecodeError, MediaTooLarge
from xmodal.search.settings import SettingsGroup

from .files import open_regular

IMAGE_MIME_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
        "image/heic",
        "image/heif",
        "image/avif",
        "image/x-icon",
        "image/jp2",
    }
)
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # orientations that rotate by 90 degrees
# What each EXIF orientation needs to show the picture upright (the EXIF standard's table).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"})
_heif_registered: bool | None = None


def sniff_image_mime(header: bytes) -> str | None:
    """The image MIME type that a file's first bytes announce, or None."""
    kind = filetype.guess(header)
    if kind is not None and kind.mime in IMAGE_MIME_TYPES:
        return kind.mime
    return None


def register_optional_plugins() -> bool:
    """Enable HEIC/AVIF decoding when pillow-heif is installed (the `heif` extra)."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_registered = True
        except ImportError:
            _heif_registered = False
    return _heif_registered


class ImageLimits(SettingsGroup):
    """What decoding refuses, in indexed files and in uploaded queries alike."""

    max_pixels: int = Field(
        128_000_000, ge=1, description="Images with more pixels are refused (decompression bombs)."
    )
    max_decoded_pixels: int = Field(
        64_000_000,
        ge=1,
        description="Pixels decoded into memory, after JPEG's reduced-size decoding: images "
        "that would need more are refused before decoding. Bounds a decode's memory at about "
        "8 bytes a pixel; 11000 x 11000 PNGs (121 MP) are refused, JPEGs of any size up to "
        "max_pixels decode at 1/8 scale.",
    )
    min_side: int = Field(
        8,
        ge=1,
        description="Images with a shorter side, in pixels, are recorded, not indexed "
        "(tracking pixels, spacers).",
    )


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied; possibly drafted to a smaller size
    width: int  # of the full, oriented image, in pixels
    height: int
    format: str


def decode_image(
    source: bytes | Path,
    limits: ImageLimits = ImageLimits(),
    draft_to: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode `source` to an oriented RGB image.

    `draft_to` (height, width) lets JPEG decoding skip detail it would throw away:
    libjpeg scales by 1/2, 1/4 or 1/8 while decoding, never below the given size; any
    picture still over twice that size is then reduced by a whole factor before it is
    converted. The size is checked from the header first: over `limits.max_pixels`, or
    over `limits.max_decoded_pixels` once drafted, raises MediaTooLarge without decoding.
    Raises MediaDecodeError with a reason a user can act on.
    """
    register_optional_plugins()
    if isinstance(source, Path):
        try:
            with open_regular(source) as file:  # never waits on a FIFO, never reads a device
                data = file.read()
        except OSError as error:
            raise MediaDecodeError(f"cannot read file: {error.strerror or error}") from error
    else:
        data = source
    if not data:
        raise MediaDecodeError("empty file (0 bytes)")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise MediaTooLarge(
            f"image over the pixel limit (setting images.max_pixels): {error}"
        ) from error
    except UnidentifiedImageError as error:
        mime = filetype.guess(data[:262])
        what = f"a {mime.mime} file" if mime else "an unrecognised format"
        raise MediaDecodeError(f"not a readable image ({what})") from error
    except OSError as error:
        raise MediaDecodeError(f"unreadable image header: {error}") from error
    width, height = image.size  # from the header: nothing decoded yet
    if width * height > limits.max_pixels:
        raise MediaTooLarge(
            f"image is {width}×{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} (setting images.max_pixels)"
        )
    if min(width, height) < limits.min_side:
        raise MediaDecodeError(
            f"image is {width}×{height}, smaller than {limits.min_side} px on a side "
            "(setting images.min_side)"
        )
    image_format = image.format or "unknown"
    try:
        if draft_to is not None and image_format == "JPEG":
            # draft() wants (width, height); a rotated EXIF orientation swaps them later,
            # so ask for the larger side in both directions. It sets the size decoded.
            side = max(draft_to)
            image.draft("RGB", (side, side))
        decoded = image.size[0] * image.size[1]
        if decoded > limits.max_decoded_pixels:
            # An 11000×11000 PNG of 470 KB cost 10 s of CPU and 2.8 GB when decoded.
            raise MediaTooLarge(
                f"image is {width}×{height} and would decode to {decoded:,} pixels, over the "
                f"budget of {limits.max_decoded_pixels:,} (setting images.max_decoded_pixels)"
            )
        if image_format == "PNG":
            # Pillow does not check the CRCs of image data chunks while decoding.
            Image.open(io.BytesIO(data)).verify()
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        image.load()
        if draft_to is not None:
            image = _reduced(image, max(draft_to))
        if orientation in _TRANSPOSE:
            image = image.transpose(_TRANSPOSE[orientation])
        if orientation in _SWAPS_SIDES:
            width, height = height, width
        rgb = _to_rgb(image)
    except Image.DecompressionBombError as error:
        raise MediaTooLarge(
            f"image over the pixel limit (setting images.max_pixels): {error}"
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise MediaDecodeError(f"corrupt image data: {error}") from error
    return DecodedImage(rgb, width, height, image_format)


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """`image` shrunk by a whole factor while both its sides stay at least twice `side`
    (what the model or the thumbnail needs, with room for its own resampling), so that
    converting and orienting a big picture works on the small one. Pictures under twice
    that size are returned as they are."""
    factor = min(image.size) // (2 * side)
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        image = _to_rgb(image)  # palette, bilevel and 16-bit pictures
    return image.reduce(factor)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, compositing any transparency onto white (as a catalogue page shows it)."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
