"""onnx_file: a failing row of any arrays as a file, a PNG of its image-shaped arrays or a
Markdown table."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

_IMAGE_CHANNELS = (1, 3, 4)  # (C, H, W) rows with these channel counts render as PNG
_MIN_SIDE = 4  # px: a smaller (H, W) is a short table, not a picture
_PNG_SIDE = 112  # px: failure images are scaled up (nearest neighbour) to at least this side


def render_failure(row: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """A failing row as a file: its image-shaped arrays as one PNG when every other array of the
    row is a single value (kept as PNG text fields), else a Markdown table of all arrays."""
    arrays = {k: _one(v) for k, v in row.items()}
    images = {k: v for k, v in arrays.items() if _image_shaped(v)}
    if images and all(v.size == 1 for k, v in arrays.items() if k not in images):
        scalars = {k: _cell(v.reshape(-1)[0]) for k, v in arrays.items() if k not in images}
        return ".png", _png([images[k] for k in sorted(images)], scalars)
    return _table(arrays)


def _one(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    return arr[0] if arr.ndim and len(arr) == 1 else arr  # a row arrives as a batch of one


def _image_shaped(a: np.ndarray) -> bool:
    """(C, H, W) with C in 1, 3, 4, or (H, W); numbers or flags, at least _MIN_SIDE a side."""
    if a.dtype.kind not in "biuf" or a.ndim not in (2, 3):
        return False
    if a.ndim == 3 and a.shape[0] not in _IMAGE_CHANNELS:
        return False
    return min(a.shape[-2:]) >= _MIN_SIDE


def _picture(a: np.ndarray) -> Any:
    """An image-shaped array as a PIL image: its own min..max to 0..255, scaled up by pixels."""
    from PIL import Image

    x = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
    pixels = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if pixels.ndim == 3:  # (C, H, W) -> (H, W, C), or (H, W) for one channel
        pixels = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    img = Image.fromarray(pixels)
    scale = max(1, -(-_PNG_SIDE // max(img.size)))  # ceil: the longer side reaches _PNG_SIDE
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def _png(images: list[np.ndarray], text: dict[str, str]) -> bytes:
    """The images side by side (4 px apart) as one PNG; `text` goes into its tEXt fields."""
    from PIL import Image, PngImagePlugin

    pictures = [_picture(a) for a in images]
    mode = "RGBA" if any(i.mode == "RGBA" for i in pictures) else "RGB"
    if all(i.mode == "L" for i in pictures):
        mode = "L"
    gap = 4
    width = sum(i.width for i in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new(mode, (width, max(i.height for i in pictures)))
    x = 0
    for i in pictures:
        canvas.paste(i.convert(mode), (x, 0))
        x += i.width + gap
    info = PngImagePlugin.PngInfo()
    for k, v in sorted(text.items()):  # PNG keys: 1-79 Latin-1 characters
        info.add_text(k.encode("latin-1", "replace")[:79].decode("latin-1"), v)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _table(arrays: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """Markdown: per array its dtype, shape, range and first values."""
    lines = [
        "| array | dtype | shape | min | max | mean | first values |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(arrays):
        one = arrays[name]
        flat = one.reshape(-1)
        if flat.size and np.issubdtype(flat.dtype, np.number) and flat.dtype != np.bool_:
            stats = [
                f"{flat.min():.6g}",
                f"{flat.max():.6g}",
                f"{flat.astype(np.float64).mean():.6g}",
            ]
        else:
            stats = ["", "", ""]
        head = " ".join(_cell(v) for v in flat[:8]) + (" ..." if flat.size > 8 else "")
        lines.append(f"| {name} | {one.dtype} | {list(one.shape)} | {' | '.join(stats)} | {head} |")
    return ".md", ("\n".join(lines) + "\n").encode()


def _cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.6g}"
    return str(v).replace("|", "\\|").replace("\n", " ")[:40]
