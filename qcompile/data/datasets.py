"""Real input data: image folders with the preprocessing a model expects, and MNIST's IDX files."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np

from ..errors import QcompileError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FITS = ("crop", "pad")


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
    """Resize the short side, centre-crop, then `(pixel * scale - mean) / std` per channel, in `channels` order.
    With `fit` "pad" (a text-line recognizer's convention, PaddleOCR's): resized to the input's height keeping
    the aspect ratio (at most its width: wider images are squeezed), normalized, padded right with 0."""

    resize_short: int = 256
    crop: int = 224
    fit: str = "crop"  # or "pad"
    channels: str = "RGB"  # or "BGR"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"  # or "NHWC"

    def __post_init__(self):
        if self.channels not in ("RGB", "BGR"):
            raise QcompileError(f"channel order must be RGB or BGR, not {self.channels!r}")
        if self.fit not in FITS:
            raise QcompileError(f"fit must be {' or '.join(FITS)}, not {self.fit!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise QcompileError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if self.crop > self.resize_short:
            raise QcompileError(f"crop {self.crop} is larger than the resized short side {self.resize_short}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise QcompileError("mean and std need three values each, std positive")

    def normalize(self, pixels: np.ndarray, width: int | None = None) -> np.ndarray:
        """uint8 RGB [H, W, 3] pixels (as `crop_image` gives them) → the float32 batch of one the model takes,
        padded right with 0 to `width`."""
        pixels = pixels.astype(np.float32)
        if self.channels == "BGR":
            pixels = pixels[..., ::-1]
        pixels = (pixels * self.scale - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if width is not None:
            pixels = np.pad(pixels, ((0, 0), (0, width - pixels.shape[1]), (0, 0)))
        if self.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(pixels[None], dtype=np.float32)


# Keras' names for the three common ImageNet conventions (keras.applications.imagenet_utils).
PREPROCESS_PRESETS = {
    "tf": ImagePreprocess(scale=1 / 127.5, mean=(1.0, 1.0, 1.0)),
    "caffe": ImagePreprocess(channels="BGR", mean=(103.939, 116.779, 123.68)),
    "torch": ImagePreprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


def image_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise QcompileError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QcompileError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def load_image(path: Path, pre: ImagePreprocess, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as float32 [1, C, H, W] (or [1, H, W, C]); `size`: the input's (height, width), which "pad"
    fits the image to."""
    if pre.fit == "pad":
        if size is None:
            raise QcompileError("padded image preprocessing needs the input's height and width")
        return pre.normalize(line_image(path, *size), size[1])
    return pre.normalize(crop_image(path, pre))


def line_image(path: Path, height: int, width: int) -> np.ndarray:
    """One image resized to `height` keeping its aspect ratio, at most `width` wide: uint8 [height, w, 3], RGB."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w = min(width, max(1, round(img.width * height / img.height)))
            return np.asarray(img.resize((w, height), Image.BILINEAR), dtype=np.uint8)
    except OSError as err:
        raise QcompileError(f"cannot read image {path}: {err}") from None


def crop_image(path: Path, pre: ImagePreprocess) -> np.ndarray:
    """One image resized and centre-cropped as `pre` says: uint8 [H, W, 3], RGB."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            ratio = pre.resize_short / min(w, h)
            img = img.resize((max(pre.resize_short, round(w * ratio)), max(pre.resize_short, round(h * ratio))),
                             Image.BILINEAR)
            w, h = img.size
            left, top = (w - pre.crop) // 2, (h - pre.crop) // 2
            return np.asarray(img.crop((left, top, left + pre.crop, top + pre.crop)), dtype=np.uint8)
    except OSError as err:
        raise QcompileError(f"cannot read image {path}: {err}") from None


def imagenet_labels(files: list[Path], synsets_file: Path) -> np.ndarray:
    """Class index of each `<wnid>_<name>.JPEG` file: the wnid's line number in the synsets file."""
    index = {line.split()[0]: i for i, line in enumerate(Path(synsets_file).read_text().splitlines()) if line.strip()}
    try:
        return np.array([index[p.name.split("_")[0]] for p in files])
    except KeyError as err:
        raise QcompileError(f"image file name does not start with a known wnid: {err}") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not, as a numpy array."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise QcompileError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
