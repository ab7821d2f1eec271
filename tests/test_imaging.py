import io
import time

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms

from processing import logcontext
from processing.errors import (
    Cancelled,
    EmptyImage,
    ImageTooLarge,
    TooManyScans,
    UnprocessableImage,
    UnsupportedImage,
)
from processing.imaging import codecs, png
from processing.imaging.codecs import (
    ALLOWED_INPUT_FORMATS,
    DecodeHint,
    ImageInfo,
    count_scans,
    encode_image,
    load_image,
    probe,
)
from processing.imaging.formats import OUTPUT_FORMATS
from tests import images

LIMIT = 10_000_000


@pytest.fixture
def upload(tmp_path):
    """Write bytes to a file and return its path, as the gateway's temporary upload would be."""

    def write(data: bytes, name: str = "upload"):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# probe


@pytest.mark.parametrize(
    "format, mime_type, extension",
    [
        ("JPEG", "image/jpeg", "jpg"),
        ("PNG", "image/png", "png"),
        ("WEBP", "image/webp", "webp"),
        ("GIF", "image/gif", "gif"),
        ("BMP", "image/bmp", "bmp"),
        ("TIFF", "image/tiff", "tiff"),
        ("HEIF", "image/heic", "heic"),
        ("AVIF", "image/avif", "avif"),
        ("JXL", "image/jxl", "jxl"),
    ],
)
def test_probe_accepts_every_allowed_format(upload, format, mime_type, extension):
    info = probe(upload(images.encode(images.gradient(64, 48), format)), LIMIT)
    assert info == ImageInfo(format=format, width=64, height=48, mime_type=mime_type)
    assert info.extension == extension


def test_the_allow_list_has_exactly_the_nine_formats():
    assert set(ALLOWED_INPUT_FORMATS) == {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF", "JXL"}


@pytest.mark.parametrize(
    "make_bytes",
    [images.eps_bytes, images.pdf_bytes, images.svg_bytes, images.text_bytes],
    ids=["eps", "pdf", "svg", "text"],
)
def test_probe_rejects_what_is_not_an_allowed_image(upload, make_bytes):
    with pytest.raises(UnsupportedImage) as caught:
        probe(upload(make_bytes()), LIMIT)
    assert caught.value.code == "unsupported_image"


def test_probe_rejects_an_empty_file(upload):
    with pytest.raises(EmptyImage) as caught:
        probe(upload(b""), LIMIT)
    assert caught.value.code == "empty_image"
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize("max_pixels", [50_000_000, 10_000_000_000], ids=["our-limit", "pillow-limit"])
def test_probe_rejects_a_decompression_bomb_from_its_header(upload, max_pixels):
    path = upload(images.png_header_bytes(30000, 30000))
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge) as caught:
        probe(path, max_pixels)
    assert time.perf_counter() - started < 0.5  # decoding 900 megapixels would take far longer
    assert caught.value.code == "image_too_large"


def test_probe_allows_exactly_the_pixel_limit(upload):
    path = upload(images.png_bytes(images.gradient(100, 100)))
    assert probe(path, 10_000).width == 100
    with pytest.raises(ImageTooLarge, match=r"100 × 100 = 10000 pixels, more than MAX_IMAGE_PIXELS \(9999\)"):
        probe(path, 9_999)


def test_probe_reports_the_displayed_size_of_a_rotated_photo(upload):
    info = probe(upload(images.oriented_jpeg_bytes(images.ROTATE_CLOCKWISE)), LIMIT)
    assert (info.width, info.height) == (20, 40)


def test_probe_reports_the_displayed_size_of_a_rotated_tiff_as_the_decoder_makes_it(upload):
    # Pillow's TIFF decoder turns the pixels itself and reports the turned size: not turned twice.
    path = upload(images.oriented_tiff_bytes(images.ROTATE_CLOCKWISE))
    info = probe(path, LIMIT)
    image, _ = load_image(path, LIMIT)
    assert (info.width, info.height) == image.size == (20, 40)


def test_probe_reports_the_displayed_size_of_a_png_turned_by_its_xmp(upload):
    path = upload(images.xmp_oriented_png_bytes(images.ROTATE_CLOCKWISE))
    info = probe(path, LIMIT)
    image, _ = load_image(path, LIMIT)
    assert (info.width, info.height) == image.size == (20, 40)


def test_pillow_s_own_pixel_limit_refuses_in_darkroom_s_words(upload, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    codecs.set_pixel_limit(1000)
    path = upload(images.png_bytes(images.gradient(100, 100)))
    with pytest.raises(ImageTooLarge) as caught:
        probe(path, LIMIT)  # a larger limit given: Pillow's, set from MAX_IMAGE_PIXELS, speaks first
    assert caught.value.message == "the image has 10000 pixels, more than MAX_IMAGE_PIXELS (1000)"


# Files the allowed decoders refuse: damaged, or a variant they don't decode


def test_a_damaged_file_in_an_allowed_format_is_corrupt_not_of_another_format(upload):
    with pytest.raises(UnprocessableImage) as caught:
        probe(upload(images.png_with_a_broken_header_bytes()), LIMIT)
    assert caught.value.code == "corrupt_image"
    assert caught.value.message.startswith("the PNG file is damaged: broken PNG file (bad header checksum")


def test_a_bmp_holding_a_png_is_a_variant_this_server_does_not_decode(upload):
    with pytest.raises(UnprocessableImage) as caught:
        probe(upload(images.bmp_holding_bytes(images.png_bytes())), LIMIT)
    assert caught.value.code == "unsupported_variant"
    assert "PNG data inside a BMP (compression BI_PNG)" in caught.value.message


def test_a_bmp_with_an_impossible_pixel_depth_is_damaged(upload):
    with pytest.raises(UnprocessableImage) as caught:
        probe(upload(images.bmp_holding_bytes(b"", compression=0, bits=30000)), LIMIT)
    assert (caught.value.code, caught.value.message) == (
        "corrupt_image",
        "the BMP file is damaged: Unsupported BMP pixel depth (30000)",
    )


def test_a_failed_tiff_decode_says_why_in_libtiff_s_words_and_logs_them_with_the_job(upload, caplog, capfd):
    caplog.handler.addFilter(logcontext.ContextFilter())
    with logcontext.bound(job="job-1"), pytest.raises(UnprocessableImage) as caught:
        load_image(upload(images.damaged_lzw_tiff_bytes()), LIMIT)

    assert caught.value.message == "the TIFF data is damaged: Using code not yet in table"
    said = [record for record in caplog.records if record.name == "processing.imaging.libtiff"]
    assert [(record.getMessage(), record.job_id) for record in said] == [
        ("libtiff: Using code not yet in table", "job-1")
    ]
    assert "not yet in table" not in capfd.readouterr().err


def test_probe_does_not_decode_the_pixels(upload):
    # The data after the header is missing; only a decode would notice.
    assert probe(upload(images.truncated_jpeg_bytes()), LIMIT).format == "JPEG"


# JPEG scans: counted from the markers, without decoding


def test_a_baseline_jpeg_has_one_scan_and_a_progressive_one_about_ten():
    assert count_scans(images.jpeg_bytes(images.photo(64, 64)), stop_after=100) == 1
    assert (
        5 <= count_scans(images.encode(images.photo(64, 64), "JPEG", progressive=True), stop_after=100) <= 20
    )


def test_the_scans_of_a_thumbnail_inside_an_app_segment_are_not_counted():
    plain = images.encode(images.photo(64, 64), "JPEG", progressive=True)
    thumbnail = images.encode(images.photo(48, 32), "JPEG", progressive=True)  # as EXIF carries one
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    with_thumbnail = plain[:2] + app1 + plain[2:]
    assert count_scans(with_thumbnail, stop_after=100) == count_scans(plain, stop_after=100)


def test_counting_stops_just_past_the_limit():
    assert count_scans(images.many_scans_jpeg_bytes(20_000), stop_after=100) == 101


@pytest.mark.parametrize("read", [probe, load_image], ids=["probe", "load_image"])
def test_a_jpeg_with_too_many_scans_is_refused_before_decoding(upload, read):
    path = upload(images.many_scans_jpeg_bytes(500))
    with pytest.raises(TooManyScans) as caught:
        read(path, LIMIT, max_jpeg_scans=100)
    assert caught.value.code == "too_many_scans" and "MAX_JPEG_SCANS" in caught.value.message
    assert probe(path, LIMIT).format == "JPEG"  # no limit given: no count


# JPEG headers: walked by a bounded walk of our own before Pillow walks them in Python


def test_a_megabyte_of_empty_jpeg_segments_is_refused_before_pillow_reads_it(upload, monkeypatch):
    path = upload(images.jpeg_with_empty_segments(250_000))
    opened, walked = [], []
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(args))
    check = codecs.check_header_walk
    monkeypatch.setattr(codecs, "check_header_walk", lambda *args: walked.append(args) or check(*args))

    with pytest.raises(UnprocessableImage) as caught:
        probe(path, LIMIT)

    assert caught.value.code == "corrupt_image" and "segments" in caught.value.message
    assert opened == [] and len(walked) == codecs.MAX_JPEG_SEGMENTS_BEFORE_SCAN + 1


@pytest.mark.parametrize(
    ("data", "accepted"),
    [
        (images.jpeg_with_empty_segments(codecs.MAX_JPEG_SEGMENTS_BEFORE_SCAN - 20), True),
        (images.jpeg_with_empty_segments(codecs.MAX_JPEG_SEGMENTS_BEFORE_SCAN + 1), False),
        (images.jpeg_with_empty_segments(1, b"\x00" * 10), True),  # junk Pillow and libjpeg step over
        (images.jpeg_with_empty_segments(1, b"\xff" * 10), True),  # fill bytes before a marker
        (images.jpeg_with_empty_segments(1, b"\x00" * (codecs.MAX_JPEG_STRAY_BYTES_BEFORE_SCAN + 1)), False),
        (images.jpeg_with_empty_segments(1, b"\xff" * (codecs.MAX_JPEG_STRAY_BYTES_BEFORE_SCAN + 1)), False),
    ],
    ids=["segments-under", "segments-over", "junk", "fill", "junk-over", "fill-over"],
)
def test_a_jpeg_header_is_walked_within_its_limits(upload, data, accepted):
    if accepted:
        info = probe(upload(data), LIMIT, max_jpeg_scans=100)
        assert (info.format, info.width, info.height) == ("JPEG", 64, 64)
        return
    with pytest.raises(UnprocessableImage) as caught:
        probe(upload(data), LIMIT)
    assert caught.value.code == "corrupt_image"


def test_a_jpeg_header_longer_than_its_byte_limit_is_refused(upload, monkeypatch):
    exif_sized = images.jpeg_with_empty_segments(0, b"\xff\xe1\xff\xff" + bytes(65_533))
    assert probe(upload(exif_sized), LIMIT).format == "JPEG"
    monkeypatch.setattr(codecs, "MAX_JPEG_HEADER_BYTES", 65_000)
    with pytest.raises(UnprocessableImage) as caught:
        probe(upload(exif_sized), LIMIT)
    assert "header of more than 65000 bytes" in caught.value.message


def test_segments_between_scans_are_bounded_too():
    data = images.encode(images.photo(64, 64), "JPEG", progressive=True)
    second_scan = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    hostile = data[:second_scan] + b"\xff\xef\x00\x02" * 250_000 + data[second_scan:]
    with pytest.raises(UnprocessableImage):
        count_scans(hostile, stop_after=100)


# load_image


def test_a_truncated_jpeg_is_reported_as_corrupt(upload):
    with pytest.raises(UnprocessableImage) as caught:
        load_image(upload(images.truncated_jpeg_bytes()), LIMIT)
    assert caught.value.code == "corrupt_image"
    assert "JPEG" in caught.value.message


@pytest.mark.parametrize("make_bytes", [images.eps_bytes, images.pdf_bytes, images.svg_bytes])
def test_load_image_refuses_what_probe_refuses(upload, make_bytes):
    with pytest.raises(UnsupportedImage):
        load_image(upload(make_bytes()), LIMIT)


def test_load_image_refuses_too_many_pixels(upload):
    with pytest.raises(ImageTooLarge):
        load_image(upload(images.png_bytes(images.gradient(100, 100))), 9_999)


def test_load_image_applies_exif_orientation(upload):
    image, info = load_image(upload(images.oriented_jpeg_bytes(images.ROTATE_CLOCKWISE)), LIMIT)
    assert image.size == (20, 40) == (info.width, info.height)
    # The red mark, top-left as stored, is top-right once turned clockwise.
    assert np.allclose(pixels(image)[2:8, -8:-2], images.RED, atol=40)
    assert np.allclose(pixels(image)[2:8, 2:8], images.WHITE, atol=40)
    assert ExifTags.Base.Orientation not in image.getexif()


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_reduced_decode_of_a_rotated_photo_covers_the_size_as_displayed(upload, orientation):
    # Stored 80x40, displayed 40x80. Asked for 10x20 as displayed: a quarter (20x10 stored) is enough;
    # taking the hint as stored would give only half (40x20 stored).
    path = upload(images.oriented_jpeg_bytes(orientation, images.marked(80, 40)))
    image, info = load_image(path, LIMIT, DecodeHint(size=(10, 20)))
    assert image.size == (10, 20)
    assert (info.width, info.height) == (40, 80) == image.info["source_size"]
    red = np.array(images.RED)
    corner = pixels(image)[1, -2] if orientation == 6 else pixels(image)[-2, 1]
    assert np.abs(corner - red).max() < 60  # the red mark, top-right or bottom-left once upright


@pytest.mark.parametrize(
    "size, hint, decoded",
    [
        ((160, 120), (20, 15), (20, 15)),  # by 8
        ((160, 120), (21, 15), (40, 30)),  # by 4: an eighth is too small
        ((162, 120), (20, 15), (81, 60)),  # by 2: only 2 divides 162
        ((161, 120), (20, 15), (161, 120)),  # nothing divides 161: a partial last column would shift pixels
        ((160, 120), (160, 120), (160, 120)),
    ],
)
def test_a_reduced_decode_shrinks_by_an_integer_that_divides_both_sides(upload, size, hint, decoded):
    image, info = load_image(upload(images.jpeg_bytes(images.gradient(*size))), LIMIT, DecodeHint(size=hint))
    assert image.size == decoded
    assert (info.width, info.height) == size
    assert image.info.get("source_size", size) == size


def test_a_luma_decode_is_gray(upload):
    image, _ = load_image(upload(images.jpeg_bytes(images.photo(64, 48))), LIMIT, DecodeHint(mode="L"))
    assert image.mode == "L"


def test_a_luma_decode_still_applies_a_colour_profile(upload):
    # The stored red is displayed green: its gray level is green's, which only the colour pixels give.
    data = images.encode(images.solid(16, 16, images.RED), "JPEG", icc_profile=images.swapped_primaries_icc())
    image, _ = load_image(upload(data), LIMIT, DecodeHint(mode="L"))
    red, green, blue = pixels(image)[8, 8]
    assert green > 200 and red < 60 and blue < 60


@pytest.mark.parametrize("format", ["PNG", "WEBP", "GIF"])
def test_other_formats_decode_whole_whatever_the_hint(upload, format):
    image, _ = load_image(
        upload(images.encode(images.gradient(160, 120), format)), LIMIT, DecodeHint("L", (20, 15))
    )
    assert image.size == (160, 120)
    assert image.mode == "RGB"
    assert "source_size" not in image.info


@pytest.mark.parametrize("make_bytes", [images.animated_gif_bytes, images.multipage_tiff_bytes])
def test_load_image_takes_the_first_frame(upload, make_bytes):
    image, _ = load_image(upload(make_bytes((images.RED, images.GREEN, images.BLUE))), LIMIT)
    assert image.mode == "RGB"
    assert np.all(pixels(image) == images.RED)


def test_load_image_converts_an_embedded_colour_profile_to_srgb(upload):
    # Under this profile the stored red is displayed green; loading must produce what is displayed.
    image, _ = load_image(upload(images.swapped_primaries_png_bytes(images.RED)), LIMIT)
    red, green, blue = pixels(image)[0, 0]
    assert green > 200 and red < 60 and blue < 60


def test_load_image_keeps_srgb_pixels_as_they_are(upload):
    gradient = images.gradient()
    image, _ = load_image(upload(images.encode(gradient, "PNG", icc_profile=images.srgb_icc())), LIMIT)
    assert np.array_equal(pixels(image), pixels(gradient))


def test_load_image_scales_16_bit_samples_instead_of_clipping(upload):
    image, _ = load_image(upload(images.sixteen_bit_png_bytes(width=64)), LIMIT)
    assert image.mode == "L"
    row = pixels(image)[0]
    assert row[0] == 0 and row[-1] == 255
    assert 120 <= row[32] <= 135


def test_load_image_turns_cmyk_into_rgb(upload):
    image, _ = load_image(upload(images.cmyk_jpeg_bytes()), LIMIT)
    assert image.mode == "RGB"
    assert np.allclose(pixels(image)[8, 8], images.RED, atol=10)


def test_load_image_keeps_the_transparent_level_of_a_1_bit_png_as_alpha(upload):
    image, _ = load_image(upload(images.one_bit_png_with_a_transparent_level_bytes(16)), LIMIT)
    assert image.mode == "LA"
    assert image.getpixel((0, 0)) == (0, 255) and image.getpixel((15, 0))[1] == 0


def test_load_image_keeps_the_transparent_level_of_a_16_bit_png_as_alpha(upload):
    # 255 in 16 bits is nearly black, and only that sample is transparent: not 65535, which clips to 255.
    image, _ = load_image(upload(images.sixteen_bit_png_with_a_transparent_level_bytes(255)), LIMIT)
    assert image.mode == "LA"
    assert [image.getpixel((x, 0)) for x in range(4)] == [(0, 255), (1, 0), (128, 255), (255, 255)]


def test_load_image_keeps_palette_transparency_as_alpha(upload):
    image, _ = load_image(upload(images.transparent_palette_png_bytes(16)), LIMIT)
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0
    assert image.getpixel((15, 0)) == (*images.RED, 255)


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_load_image_returns_a_working_mode_and_the_source_format(upload, format):
    image, info = load_image(upload(images.encode(images.gradient(), format)), LIMIT)
    assert image.mode in ("L", "LA", "RGB", "RGBA")
    assert image.info["source_format"] == info.format == format


def test_a_loaded_image_can_be_processed_after_the_file_is_closed(upload):
    image, _ = load_image(upload(images.animated_gif_bytes()), LIMIT)
    assert image.copy().rotate(90).size == image.size


# encode_image


def assert_no_metadata(data: bytes) -> None:
    output = decoded(data)
    if output.format == "JXL":
        # A JPEG XL holds no ICC profile here: its decoder describes the codestream's colour space as one.
        description = ImageCms.ImageCmsProfile(
            io.BytesIO(output.info.pop("icc_profile"))
        ).profile.profile_description
        assert description == "sRGB"
    assert not output.getexif()
    assert not output.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    leaked = {"exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment", "Comment"} & set(output.info)
    assert not leaked
    assert b"Leaky" not in data and b"shot at home" not in data and b"rdf:" not in data


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
@pytest.mark.parametrize("input_format", ["JPEG", "PNG", "WEBP", "TIFF", "HEIF", "AVIF", "JXL"])
def test_encoded_output_carries_no_metadata(upload, input_format, output_format):
    data = images.with_metadata_bytes(input_format)
    assert b"Leaky" in data  # the input does carry it
    image, _ = load_image(upload(data), LIMIT)
    assert_no_metadata(encode_image(image, output_format, 85))


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
def test_metadata_attached_to_the_image_is_not_written(output_format):
    image = images.gradient()
    image.info.update(
        exif=images.camera_exif().tobytes(), icc_profile=images.srgb_icc(), comment=b"shot at home"
    )
    image.info["xmp"] = images.XMP
    assert_no_metadata(encode_image(image, output_format, 85))


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
def test_encoded_output_is_the_requested_format(output_format):
    output = decoded(encode_image(images.gradient(), output_format, 90))
    assert output.format == output_format.upper()
    assert output.mode == ("P" if output_format == "gif" else "RGB")  # a GIF is a palette
    assert output.size == (64, 48)


def test_png_output_is_lossless():
    image = images.noise(32, 32)
    assert np.array_equal(pixels(decoded(encode_image(image, "png", 1))), pixels(image))


def image_data(png_bytes: bytes) -> bytes:
    """A PNG's IDAT chunks, joined: its compressed, filtered rows, however they are split in chunks."""
    data, position = b"", 8
    while position < len(png_bytes):
        length = int.from_bytes(png_bytes[position : position + 4], "big")
        if png_bytes[position + 4 : position + 8] == b"IDAT":
            data += png_bytes[position + 8 : position + 8 + length]
        position += 12 + length
    return data


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize(
    "image",
    [images.photo(123, 77), images.noise(64, 40), images.solid(1, 9), images.checkerboard(300, 1, square=3)],
    ids=["photo", "noise", "one column", "one row"],
)
def test_png_output_is_pillows_image_data_byte_for_byte(image, mode, monkeypatch):
    monkeypatch.setattr(png, "BAND_BYTES", 1000)  # several bands, each filtered knowing the row above
    image = image.convert(mode)
    if "A" in mode:
        image.putalpha(images.noise(*image.size, seed=3).convert("L"))
    ours = encode_image(image, "png", 85)
    pillows = io.BytesIO()
    image.save(pillows, "PNG", optimize=False, compress_level=6)

    assert image_data(ours) == image_data(pillows.getvalue())
    assert decoded(ours).mode == mode and np.array_equal(pixels(decoded(ours)), pixels(image))


def test_a_png_reports_its_progress_band_by_band_and_stops_when_told(monkeypatch):
    monkeypatch.setattr(png, "BAND_BYTES", 64 * 3 * 10)  # ten rows a band
    seen = []
    encode_image(images.photo(64, 48), "png", 85, progress=seen.append)
    assert seen == [10 / 48, 20 / 48, 30 / 48, 40 / 48, 1.0]

    def cancelled(fraction):
        raise Cancelled("the job was cancelled")

    with pytest.raises(Cancelled):
        encode_image(images.photo(64, 48), "png", 85, progress=cancelled)


@pytest.mark.parametrize("output_format", ["jpeg", "webp", "avif", "jxl"])
def test_lossy_output_stays_close_to_the_input(output_format):
    image = images.gradient(64, 48)
    output = decoded(encode_image(image, output_format, 90)).convert("RGB")
    assert np.abs(pixels(output) - pixels(image)).mean() < 3


@pytest.mark.parametrize("output_format", ["jpeg", "webp", "avif", "jxl"])
def test_quality_trades_size_for_fidelity(output_format):
    image = images.noise(64, 64)
    assert len(encode_image(image, output_format, 10)) < len(encode_image(image, output_format, 95))


def test_jpeg_flattens_transparency_onto_white():
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    output = decoded(encode_image(transparent, "jpeg", 95))
    assert output.mode == "RGB"
    assert np.allclose(pixels(output), images.WHITE, atol=3)


def test_jpeg_keeps_grayscale_as_grayscale():
    output = decoded(encode_image(images.gradient(mode="LA"), "jpeg", 95))
    assert output.mode == "L"


@pytest.mark.parametrize("output_format", ["png", "webp", "avif", "jxl"])
def test_png_webp_avif_and_jpeg_xl_keep_transparency(output_format):
    image = images.with_alpha(images.gradient(), alpha=0)
    image.paste((0, 0, 255, 255), (0, 0, 8, 8))
    output = decoded(encode_image(image, output_format, 100))
    assert output.mode == "RGBA"
    assert output.getpixel((20, 20))[3] == 0
    assert output.getpixel((2, 2))[3] == 255


def test_gif_keeps_transparency_as_one_bit_at_half_opacity():
    image = Image.new("RGBA", (4, 1))
    for x, alpha in enumerate((0, 100, 160, 255)):
        image.putpixel((x, 0), (0, 0, 255, alpha))
    output = decoded(encode_image(image, "gif", 85)).convert("RGBA")
    assert [output.getpixel((x, 0))[3] for x in range(4)] == [0, 0, 255, 255]
    assert output.getpixel((3, 0))[:3] == (0, 0, 255)


def test_an_image_too_wide_for_webp_is_unprocessable_in_webp_only():
    strip = Image.new("L", (16_384, 1))
    with pytest.raises(UnprocessableImage) as caught:
        encode_image(strip, "webp", 85)
    assert caught.value.code == "too_large_for_format"
    assert decoded(encode_image(strip, "png", 85)).size == (16_384, 1)


def test_encode_image_refuses_other_formats():
    with pytest.raises(ValueError):
        encode_image(images.gradient(), "bmp", 85)


def test_a_sequential_jpeg_is_not_walked_for_scans(upload, monkeypatch):
    counted = []
    monkeypatch.setattr(codecs, "count_scans", lambda *args, **kwargs: counted.append(args) or 1)
    probe(upload(images.jpeg_bytes(images.photo(64, 64))), LIMIT, max_jpeg_scans=100)
    assert counted == []
    probe(upload(images.encode(images.photo(64, 64), "JPEG", progressive=True)), LIMIT, max_jpeg_scans=100)
    assert len(counted) == 1


def test_a_sequential_jpeg_with_its_scan_repeated_is_refused_by_the_decoder(upload):
    data = images.jpeg_bytes(images.solid(256, 256))
    start, end = images.smallest_scan(data)
    repeated = data[:end] + data[start:end] * 500 + data[end:]
    with pytest.raises(UnprocessableImage) as caught:
        load_image(upload(repeated), LIMIT, max_jpeg_scans=100)
    assert caught.value.code == "corrupt_image"
