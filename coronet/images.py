"""Images as the report shows them: a generator's CHW tensor in [-1, 1] as PNG bytes (torch-free,
so the export, the device bench and the report share it)."""

from __future__ import annotations

import io

import numpy as np


def png_bytes(image: np.ndarray, max_side: int | None = None) -> bytes:
    """A CHW image in [-1, 1] (1 or 3 channels; the first 3 of more) as PNG; with `max_side`,
    shrunk (nearest pixel) so that neither side exceeds it."""
    from PIL import Image

    pixels = np.clip((np.asarray(image)[:3] + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if max_side is not None and max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
