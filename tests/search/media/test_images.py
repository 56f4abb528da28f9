from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo, png_with_bad_crc, png_with_huge_header, truncated_jpeg
from xmodal.search import ImageLimits, MediaDecodeError, decode_image
from xmodal.search.media.images import register_optional_plugins, sniff_image_mime


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats_decode_to_rgb(format):
    decoded = decode_image(encoded(photo(3, (64, 48)), format))
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (64, 48)


def test_gif_takes_the_first_frame():
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))
    data = encoded(red, "GIF", save_all=True, append_images=[blue])
    pixel = decode_image(data).image.getpixel((16, 16))
    assert pixel[0] > 200 and pixel[2] < 50


def test_heic_decodes_when_the_plugin_is_installed():
    if not register_optional_plugins():
        pytest.skip("pillow-heif (the heif extra) is not installed")
    try:
        data = encoded(photo(4, (64, 48)), "HEIF")
    except (KeyError, OSError) as error:
        pytest.skip(f"this pillow-heif build cannot encode HEIF: {error}")
    assert decode_image(data).image.size == (64, 48)


def test_exif_orientation_is_applied():
    image = photo(5, (80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encoded(image, "JPEG", exif=exif.tobytes()))
    assert decoded.image.size == (40, 80)
    assert (decoded.width, decoded.height) == (40, 80)


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert decode_image(encoded(clear, "PNG")).image.getpixel((8, 8)) == (255, 255, 255)


def test_draft_decodes_large_jpegs_smaller_but_reports_full_size():
    data = encoded(photo(6, (1600, 1200)), "JPEG")
    decoded = decode_image(data, draft_to=(224, 224))
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert min(decoded.image.size) >= 224 and decoded.image.size[0] < 1600


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (truncated_jpeg(), "corrupt image data"),
        (b"plain text, not a picture\n" * 10, "not a readable image"),
        (png_with_bad_crc(), "corrupt image data"),
        (encoded(Image.new("RGB", (1, 1)), "PNG"), "smaller than 8 px"),
        (png_with_huge_header(), "images.max_pixels"),
    ],
    ids=["zero-bytes", "truncated-jpeg", "text", "bad-crc-png", "one-pixel", "huge-header"],
)
def test_bad_inputs_raise_a_reason(data, reason):
    with pytest.raises(MediaDecodeError, match=reason):
        decode_image(data)


def test_pixel_limit_is_a_setting():
    data = encoded(photo(7, (200, 100)), "PNG")
    with pytest.raises(MediaDecodeError, match=r"images\.max_pixels"):
        decode_image(data, ImageLimits(max_pixels=10_000))
    assert decode_image(data, ImageLimits(max_pixels=20_000)).width == 200


def test_content_sniffing_ignores_the_name():
    assert sniff_image_mime(encoded(photo(8), "PNG")[:262]) == "image/png"
    assert sniff_image_mime(b"hello world") is None
    assert np.asarray(decode_image(encoded(photo(8), "PNG")).image).shape == (120, 160, 3)


def test_the_decoded_pixel_budget_refuses_before_decoding(monkeypatch):
    from xmodal.search.errors import MediaTooLarge

    loaded: list[tuple[int, int]] = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda im: loaded.append(im.size) or real_load(im))
    # 11000 x 11000 is under images.max_pixels (128 MP): over the budget all the same.
    with pytest.raises(MediaTooLarge, match=r"images\.max_decoded_pixels"):
        decode_image(png_with_huge_header(11_000, 11_000))
    assert loaded == []
    # A JPEG counts the pixels it decodes once drafted: 1/8 of 1600 x 1200 here.
    jpeg = encoded(photo(4, (1600, 1200)), "JPEG")
    tight = ImageLimits(max_decoded_pixels=200 * 150)
    with pytest.raises(MediaTooLarge):
        decode_image(jpeg, tight)
    assert decode_image(jpeg, tight, draft_to=(64, 64)).width == 1600


def test_large_pictures_are_reduced_after_decoding_keeping_their_orientation():
    # Left half red, right half blue, stored sideways (EXIF orientation 6: turn clockwise).
    picture = Image.new("RGB", (1200, 600), (255, 0, 0))
    picture.paste((0, 0, 255), (600, 0, 1200, 600))
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encoded(picture, "PNG", exif=exif), draft_to=(64, 64))
    assert (decoded.width, decoded.height) == (600, 1200)  # the full picture, upright
    assert decoded.image.size == (150, 300)  # reduced by 4: sides still over 2 x 64
    top, bottom = decoded.image.getpixel((75, 10)), decoded.image.getpixel((75, 290))
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50
    # Under twice the size asked for, a picture is left as it is.
    assert decode_image(encoded(picture, "PNG"), draft_to=(400, 400)).image.size == (1200, 600)
