"""Point labels that never overlap: each label takes the first free place on rings of growing distance around its
point (joined to it by a thin leader line once it is away from it), measured with the figure's renderer."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

#: Distances (typographic points) of the rings of places tried around a point; the first is right next to it.
RINGS_PT = (5.0, 12.0, 20.0, 30.0, 42.0, 56.0, 75.0, 100.0, 130.0, 170.0)
#: Places tried on each ring (the first ring tries the 8 compass points, farther rings more).
PLACES_PER_RING = 8
#: Space kept free around every label and marker (display pixels).
PAD_PX = 2.0
#: Half the side of the square kept free around each marker (display pixels).
MARKER_HALF_PX = 4.0


def label_gid(text: str) -> str:
    """The SVG group id of a label (``label-`` and the text with characters outside [A-Za-z0-9_-] replaced)."""
    return "label-" + re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _places() -> Iterator[tuple[float, float, float]]:
    """(dx, dy, ring distance) in points: right, upper right, up, ... on each ring, nearest ring first."""
    for ring, r in enumerate(RINGS_PT):
        n = PLACES_PER_RING * (1 + ring // 3)
        for k in range(n):
            a = 2 * math.pi * k / n
            yield r * math.cos(a), r * math.sin(a), r


def _alignment(dx: float, dy: float) -> tuple[str, str]:
    """Text alignment that puts the label on the side of its point that the offset points to."""
    ha = "left" if dx > 1e-9 else "right" if dx < -1e-9 else "center"
    va = "bottom" if dy > 1e-9 else "top" if dy < -1e-9 else "center"
    return ha, va


def text_box(ann: Annotation) -> Bbox:
    """The label's text alone (without its leader line) in display pixels."""
    from matplotlib.text import Text

    renderer = ann.get_figure(root=True).canvas.get_renderer()
    ann.get_window_extent(renderer)  # positions the text from its offset
    return Text.get_window_extent(ann, renderer)


def _box_at(px: float, py: float, w: float, h: float, ha: str, va: str) -> Bbox:
    """The display box of a w x h text whose anchor is at (px, py) with this alignment."""
    from matplotlib.transforms import Bbox

    x0 = px if ha == "left" else px - w if ha == "right" else px - w / 2
    y0 = py if va == "bottom" else py - h if va == "top" else py - h / 2
    return Bbox.from_extents(x0, y0, x0 + w, y0 + h)


def _first_free(px: float, py: float, w: float, h: float, px_per_pt: float, inside: Bbox,
                taken: list[Bbox]) -> tuple[float, float, float, Bbox]:
    """(dx, dy, ring, padded box) of the first place for a w x h label of the point at (px, py) that overlaps
    nothing taken: inside the axes first (clear of the title and the tick labels), then anywhere on the figure. If
    every place on every ring is taken (hundreds of labels), the farthest one, drawn over what is there."""
    for within in (True, False):
        for dx, dy, r in _places():
            ha, va = _alignment(dx, dy)
            box = _box_at(px + dx * px_per_pt, py + dy * px_per_pt, w, h, ha, va).padded(PAD_PX)
            fits = not within or (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0
                                  and box.y1 <= inside.y1)
            if fits and not any(box.overlaps(t) for t in taken):
                return dx, dy, r, box
    return dx, dy, r, box


def place_labels(ax: Axes, points: Sequence[tuple[float, float, str]], fontsize: float = 7.0) -> list[Annotation]:
    """Annotate each (x, y, text) in data coordinates so that no label overlaps another label, a marker or the
    legend, inside the axes where there is room; draw the legend before calling. Labels are placed in order of x,
    then y; each label's size is measured once and its places are tried arithmetically."""
    from matplotlib.transforms import Bbox

    fig = ax.get_figure(root=True)
    fig.canvas.draw()  # settles the axis limits and the legend, which the places are measured against
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72
    legend = ax.get_legend()
    taken: list[Bbox] = [legend.get_window_extent(renderer).padded(PAD_PX)] if legend is not None else []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - MARKER_HALF_PX, py - MARKER_HALF_PX, px + MARKER_HALF_PX,
                                       py + MARKER_HALF_PX))
    inside = ax.get_window_extent(renderer)
    placed = []
    for x, y, text in sorted(points, key=lambda p: (p[0], p[1])):
        probe = ax.text(x, y, text, fontsize=fontsize)
        size = probe.get_window_extent(renderer)
        probe.remove()
        px, py = ax.transData.transform((x, y))
        dx, dy, r, box = _first_free(px, py, size.width, size.height, px_per_pt, inside, taken)
        ha, va = _alignment(dx, dy)
        leader = {"arrowstyle": "-", "lw": 0.5, "color": "0.45", "shrinkA": 0, "shrinkB": 2} \
            if r > RINGS_PT[0] else None
        placed.append(ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                  ha=ha, va=va, arrowprops=leader, gid=label_gid(text)))
        taken.append(box)
    return placed
