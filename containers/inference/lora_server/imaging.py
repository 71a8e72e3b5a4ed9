"""Encoding generated images, and the response size SageMaker allows."""

from __future__ import annotations

import io

from PIL.Image import Image

# InvokeEndpoint carries at most 6 MB in a real-time response; a larger body fails the call.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
JPEG_QUALITY = 90


class ResponseTooLarge(Exception):
    """The encoded response would exceed SageMaker's limit (413); the message says what to reduce."""


def encode(image: Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def check_size(size: int, num_images: int, output_format: str) -> None:
    if size <= MAX_RESPONSE_BYTES:
        return
    advice = ["fewer num_images" if num_images > 1 else None, "a smaller width or height", "output_format jpeg" if output_format == "png" else None]
    raise ResponseTooLarge(
        f"the response would be {size} bytes, over SageMaker's limit of {MAX_RESPONSE_BYTES} bytes (6 MB); "
        f"ask for {', or '.join(a for a in advice if a)}"
    )
