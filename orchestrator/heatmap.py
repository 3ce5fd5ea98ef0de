"""FP16 quality you can see: PNG heatmaps of image-like tensors and of |ours - theirs| x 100, and an HTML
index that shows them side by side (written by ``debug --compare ... --dump DIR``).

A tensor is image-like when it is N x C x H x W with H and W >= 16. Its picture tiles the channels of the
first images (at most ``MAX_IMAGES`` x ``MAX_CHANNELS``) in a grid, each channel min-max normalised over
the whole tensor. The difference picture uses the seed's scale: |difference| x 100, so a pixel is white
where the two runs differ by 0.01 or more and black where they agree.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCALE = 100.0
MAX_IMAGES, MAX_CHANNELS, MIN_SIDE = 2, 64, 16
FOLDER = "heatmaps"


@dataclass(frozen=True)
class Heatmap:
    step: str
    tensor: str
    shape: tuple[int, ...]
    image: str  # path relative to the dump folder
    diff: str | None  # None when there was nothing to compare with
    max_abs: float | None


def image_like(array: np.ndarray) -> bool:
    return array.ndim == 4 and array.shape[2] >= MIN_SIDE and array.shape[3] >= MIN_SIDE and array.dtype.kind == "f"


def tile(array: np.ndarray) -> np.ndarray:
    """N x C x H x W -> one 2-D mosaic: a row of channels per image, one pixel of gap (NaN) between tiles."""
    n, c = min(array.shape[0], MAX_IMAGES), min(array.shape[1], MAX_CHANNELS)
    columns = int(np.ceil(np.sqrt(c)))
    rows = -(-c // columns)
    h, w = array.shape[2:]
    mosaic = np.full((n * rows * (h + 1), columns * (w + 1)), np.nan)
    for i in range(n):
        for ch in range(c):
            r, col = i * rows + ch // columns, ch % columns
            mosaic[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = array[i, ch]
    return mosaic


def colour(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 on a black-red-yellow-white ramp; NaN (gaps, non-finite values) is blue-grey."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    rgb = (rgb * 255).round().astype(np.uint8)
    rgb[np.isnan(values)] = (40, 48, 64)
    return rgb


def normalised(array: np.ndarray) -> np.ndarray:
    finite = array[np.isfinite(array)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    out = (array.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0)
    return np.where(np.isfinite(array), out, np.nan)


def save_png(path: Path, rgb: np.ndarray) -> None:
    from io import BytesIO

    from PIL import Image

    from .cache import write_file_atomic

    buffer = BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")
    write_file_atomic(path, buffer.getvalue())


def write_heatmaps(dump_dir: Path, records, others=None) -> list[Heatmap]:
    """A picture of every image-like output of ``records`` and, where ``others`` (the comparison run's
    records, matched by step name and occurrence) has the same tensor, of the difference x 100."""
    theirs = {(r.name, r.occurrence): r for r in others or ()}
    maps = []
    for record in records:
        other = theirs.get((record.name, record.occurrence))
        for tensor, array in record.outputs.items():
            if not image_like(array):
                continue
            stem = f"{FOLDER}/{record.index:03d}_{record.name}_{tensor}"
            save_png(dump_dir / f"{stem}.png", colour(tile(normalised(array))))
            diff_file, max_abs = None, None
            want = other.outputs.get(tensor) if other is not None else None
            if want is not None and want.shape == array.shape:
                diff = np.abs(array.astype(np.float64) - want.astype(np.float64))
                max_abs = float(np.nan_to_num(diff, nan=np.inf).max())
                diff_file = f"{stem}_diff.png"
                save_png(dump_dir / diff_file, colour(tile(diff * SCALE)))
            maps.append(Heatmap(record.name, tensor, array.shape, f"{stem}.png", diff_file, max_abs))
    if maps:
        (dump_dir / "index.html").write_text(index_html(maps))
    return maps


def summary_lines(maps: list[Heatmap]) -> list[str]:
    lines = [f"heatmaps (|difference| x {SCALE:g}: white = 0.01 or more; index.html shows them side by side):"]
    for m in maps:
        diff = f"  diff {m.diff} (max abs {m.max_abs:.3g})" if m.diff else ""
        lines.append(f"  {m.step} {m.tensor} {list(m.shape)}: {m.image}{diff}")
    return lines


def index_html(maps: list[Heatmap]) -> str:
    rows = []
    for m in maps:
        diff = (f'<img src="{html.escape(m.diff)}"><br>max abs {m.max_abs:.3g}' if m.diff else "no comparison")
        rows.append(f"<tr><td>{html.escape(m.step)}</td><td>{html.escape(m.tensor)}<br>{list(m.shape)}</td>"
                    f'<td><img src="{html.escape(m.image)}"></td><td>{diff}</td></tr>')
    return ("<!doctype html><meta charset=utf-8><title>orchestrator debug heatmaps</title>"
            "<style>img{image-rendering:pixelated;max-width:45vw}td{vertical-align:top;padding:4px}</style>"
            f"<table><tr><th>step</th><th>tensor</th><th>tensor (min-max)</th><th>|difference| x {SCALE:g}</th>"
            "</tr>\n" + "\n".join(rows) + "\n</table>\n")
