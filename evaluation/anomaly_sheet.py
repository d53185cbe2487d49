"""The contact sheet of score.py: the most and the least anomalous images, each beside its heat map
(evaluation/anomaly.py: where it costs more bits than typical images do at that place)."""
from __future__ import annotations

import os

import numpy as np

from fileio.atomic import write_figure


def _short(name: str, width: int = 22) -> str:
    name = os.path.basename(name) or name
    return name if len(name) <= width else "..." + name[-(width - 3):]


def contact_sheet(path: str, score: str, most: dict, least: dict, scale: float) -> None:
    """Write a PNG (atomically) of two blocks of rows, most anomalous first: each row an image, its heat map,
    its score and name. ``most`` / ``least``: {"images": uint8 (n, C, H, W), "heat": (n, H, W) bits,
    "scores": (n,), "names": [str]}; ``scale``: the heat maps' colour range, +-scale bits (one for all)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = max(len(most["scores"]), len(least["scores"]))
    fig, axes = plt.subplots(rows, 4, figsize=(6.4, 1.35 * rows + 0.9), squeeze=False, layout="constrained")
    heat_image = None
    for col, (block, title) in enumerate(((most, "most anomalous"), (least, "least anomalous"))):
        axes[0, 2 * col].set_title(f"{title}\n(image)", fontsize=8)
        axes[0, 2 * col + 1].set_title("bits above typical", fontsize=8)
        for r in range(rows):
            ax_img, ax_heat = axes[r, 2 * col], axes[r, 2 * col + 1]
            for ax in (ax_img, ax_heat):
                ax.set_xticks([])
                ax.set_yticks([])
            if r >= len(block["scores"]):
                ax_img.axis("off")
                ax_heat.axis("off")
                continue
            im = block["images"][r]
            if im.shape[0] == 1:
                ax_img.imshow(im[0], cmap="gray", vmin=0, vmax=255)
            else:
                ax_img.imshow(np.ascontiguousarray(im.transpose(1, 2, 0)))
            heat_image = ax_heat.imshow(block["heat"][r], cmap="RdBu_r", vmin=-scale, vmax=scale)
            ax_img.set_xlabel(f"{block['scores'][r]:.4g}\n{_short(block['names'][r])}", fontsize=6)
    fig.suptitle(f"score: {score} (higher: more anomalous)", fontsize=9)
    if heat_image is not None:
        fig.colorbar(heat_image, ax=axes, shrink=0.5, label="bits per pixel above the typical image's")
    write_figure(fig, path, dpi=110)
    plt.close(fig)
