"""Folders of images in, detections out: loading frames, writing detections JSON and drawn PNGs (PIL)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from shiftpu.errors import ShiftpuError
from shiftpu.sw.detection import Detections

#: File suffixes read as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230)]


class ImageFolderError(ShiftpuError):
    """A folder holds no readable images, or an image cannot be read."""


def image_paths(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"{folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageFolderError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def load_image(path: Path) -> np.ndarray:
    """An H x W x 3 uint8 RGB array."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ImageFolderError(f"{path}: cannot read image: {e}") from None


def load_folder(folder: str | Path) -> list[tuple[Path, np.ndarray]]:
    return [(p, load_image(p)) for p in image_paths(folder)]


def detections_json(det: Detections, classes: list[str] | None = None) -> list[dict]:
    out = []
    for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
        d = {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4), "label": int(label)}
        if classes:
            d["class"] = classes[int(label)]
        out.append(d)
    return out


def draw(image: np.ndarray, det: Detections, classes: list[str] | None = None) -> Image.Image:
    """The image with each detection's box and label drawn on it."""
    im = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(im)
    for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
        colour = _COLOURS[int(label) % len(_COLOURS)]
        pen.rectangle([float(v) for v in box], outline=colour, width=max(1, min(im.size) // 100))
        name = classes[int(label)] if classes else str(int(label))
        pen.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=colour)
    return im


def write_results(out_dir: str | Path, results: list[tuple[Path, np.ndarray, Detections]],
                  classes: list[str] | None = None) -> Path:
    """``detections.json`` (image name -> detections, box pixels x0, y0, x1, y1) and one drawn PNG per image."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {}
    for path, image, det in results:
        doc[path.name] = detections_json(det, classes)
        draw(image, det, classes).save(out_dir / f"{path.stem}.png")
    target = out_dir / "detections.json"
    target.write_text(json.dumps(doc, indent=1))
    return target


def find_sidecar(compiled_folder: Path, source: str) -> Path | None:
    """The detector description (``<model>.json``) of a compiled model: in the folder, else the shipped one."""
    stem = Path(source).stem
    for candidate in (compiled_folder / f"{stem}.json", compiled_folder / "detector.json",
                      Path(__file__).resolve().parents[1] / "shiftpu" / "models" / f"{stem}.json"):
        if candidate.is_file():
            return candidate
    return None


def run_image_folder(compiled_folder: str | Path, images: str | Path, out_dir: str | Path, backend: str = "golden",
                     sidecar: str | Path | None = None, bitstream: str | Path | None = None,
                     cpu_runtime: str = "auto") -> Path:
    """Detect objects in every image of a folder through the pipeline; writes detections.json and drawn PNGs.

    Returns the path of detections.json. Boxes are in pixels of each original image. ``cpu_runtime``: what runs
    the model's CPU regions (see ``shiftpu.compiled.cpu_regions.CpuRuntime``).
    """
    from shiftpu.compiled.folder import read_folder
    from shiftpu.sw.detection import DecodeParams
    from shiftpu.sw.device_backends import open_backend
    from shiftpu.sw.executor import Executor
    from shiftpu.sw.pipeline import Pipeline
    from shiftpu.sw.pipeline_model import ModelStages

    loaded = load_folder(images)
    compiled = read_folder(compiled_folder)
    executor = Executor(compiled, backend=open_backend(backend, compiled.config, compiled.board,
                                                        Path(bitstream) if bitstream else None),
                        cpu_runtime=cpu_runtime)
    side = Path(sidecar) if sidecar is not None else find_sidecar(Path(compiled_folder),
                                                                  executor.manifest.get("source", ""))
    if side is None:
        raise ImageFolderError(f"{compiled_folder}: no detector description (<model>.json with 'decode' and "
                               "'classes') found: detections need one")
    try:
        params = DecodeParams.from_json(side)
        classes = list(json.loads(side.read_text())["classes"])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ImageFolderError(f"{side}: not a detector description: {e}") from None
    stages = ModelStages(executor, decode_params=params)
    results = [(path, image, res.detections)
               for (path, image), (_, res) in zip(loaded, Pipeline(stages.stages()).run(img for _, img in loaded),
                                                  strict=True)]
    return write_results(out_dir, results, classes)
