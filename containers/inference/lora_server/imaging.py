"""Encoding generated images, and the response size SageMaker allows."""

from __future__ import annotations

import io

from PIL.Image import Image

# InvokeEndpoint carries at most 6 MB in a real-time response ("payload sizes up to 6 MB", SageMaker
# developer guide, hosting FAQ), read as 6,000,000 bytes, the smaller reading; the margin is for the
# headers and what SageMaker adds around the body.
SAGEMAKER_RESPONSE_LIMIT_BYTES = 6_000_000
MAX_RESPONSE_BYTES = SAGEMAKER_RESPONSE_LIMIT_BYTES - 16 * 1024

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
JPEG_QUALITY = 90
# The fewest bytes per pixel a generated image takes in each format, for refusing before generating
# a response that cannot fit: a PNG of a generated image (lossless, 3 bytes a pixel raw) stays above
# 1 byte a pixel; JPEG at quality 90 can go far lower, so it is never refused in advance.
MIN_BYTES_PER_PIXEL = {"png": 1.0, "jpeg": 0.0}


class ResponseTooLarge(Exception):
    """The encoded response would exceed SageMaker's limit (413); the message says what to reduce."""


def encode(image: Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _too_large(size: int, num_images: int, output_format: str, estimated: bool) -> ResponseTooLarge:
    advice = ["fewer num_images" if num_images > 1 else None, "a smaller width or height", "output_format jpeg" if output_format == "png" else None]
    return ResponseTooLarge(
        f"the response would be {'at least about ' if estimated else ''}{size} bytes, over SageMaker's limit of "
        f"{MAX_RESPONSE_BYTES} bytes (6 MB less a margin); ask for {', or '.join(a for a in advice if a)}"
    )


def check_size(size: int, num_images: int, output_format: str) -> None:
    if size > MAX_RESPONSE_BYTES:
        raise _too_large(size, num_images, output_format, estimated=False)


def check_can_fit(width: int, height: int, num_images: int, output_format: str, all_images_as_json: bool) -> None:
    """Refuses, before any GPU work, a response that cannot fit whatever the images look like."""
    images = num_images if all_images_as_json else 1
    smallest = width * height * images * MIN_BYTES_PER_PIXEL[output_format]
    if all_images_as_json:
        smallest *= 4 / 3  # base64
    if smallest > MAX_RESPONSE_BYTES:
        raise _too_large(round(smallest), num_images, output_format, estimated=True)
