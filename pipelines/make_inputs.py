"""Write example inputs for the pipelines in this folder (synthetic, seeded): pipelines/inputs/*.npz."""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth synthetic photo-like image: colour gradients, a disc, and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.08).astype(np.float32)
    rgb = np.stack([x * 200 + disc * 50, y * 180 + disc * 60, (1 - x) * 120 + disc * 100], axis=-1)
    rgb += rng.normal(0, 6, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def trimap(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    r2 = (x - 0.5) ** 2 + (y - 0.45) ** 2
    return np.where(r2 < 0.05, 255, np.where(r2 < 0.11, 128, 0)).astype(np.uint8)


def main() -> None:
    out = HERE / "inputs"
    out.mkdir(exist_ok=True)
    np.savez(out / "classify.npz", image=np.stack([image(224, 224, 0), image(224, 224, 1)]))
    np.savez(out / "cascade.npz", image=image(224, 224, 2)[None], threshold=np.float32(0.5))
    np.savez(out / "matting.npz", image=image(160, 224, 3)[None], trimap=trimap(160, 224)[None])
    np.savez_compressed(out / "modes.npz", image=image(224, 224, 6)[None], mode=np.int32(1))
    np.savez_compressed(out / "sharpen.npz", image=image(224, 224, 4)[None], target=np.float32(0.5),
                        factor=np.float32(2.0))


if __name__ == "__main__":
    main()
