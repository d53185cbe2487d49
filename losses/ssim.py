"""SSIM with the 2018 definition (Wang et al. 2004, as in the reference metrics).

Gaussian window of side ``window_size`` and sigma 1.5, convolved with zero 'same' padding
so the SSIM map keeps the image size; C1 = 0.01^2, C2 = 0.03^2 for data in [0, 1].
Written here because the maintained libraries differ at the borders: pytorch-msssim and
torchmetrics crop to the valid region, kornia reflects; the 2018 numbers need zero padding.
"""
from __future__ import annotations

import functools

import torch

C1 = 0.01 ** 2
C2 = 0.03 ** 2
SIGMA = 1.5


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, window_size: int, sigma: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    """(size, size) band matrix M with M @ v = v convolved with the 1-D Gaussian, zero-padded.

    Rows near the border simply lose the taps that fall outside the image, which is
    exactly zero 'same' padding. For 28x28 images two small matmuls are several times
    faster on a CPU than a depthwise convolution.
    """
    coords = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    pad = window_size // 2
    i = torch.arange(size)[:, None]
    j = torch.arange(size)[None, :]
    offset = j - i + pad
    inside = (offset >= 0) & (offset < window_size)
    m = torch.where(inside, g[offset.clamp(0, window_size - 1)], torch.zeros((), dtype=torch.float64))
    return m.to(dtype).to(device)  # cast on the CPU first: MPS has no float64


def ssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int = 5, sigma: float = SIGMA) -> torch.Tensor:
    """Per-pixel SSIM of two (B, C, H, W) batches in [0, 1]; same shape as the inputs."""
    if window_size % 2 == 0 or window_size < 1:
        raise ValueError(f"window_size must be odd and positive, got {window_size}")
    c, h, w = x.shape[1:]
    mh = _blur_matrix(h, window_size, sigma, str(x.device), x.dtype)
    mw = mh if w == h else _blur_matrix(w, window_size, sigma, str(x.device), x.dtype)
    # Four local statistics in one pass: blur(S) = Mh @ S @ Mw^T for each stacked map.
    # Only sigma_x^2 + sigma_y^2 is needed, so x^2 + y^2 is blurred as one map.
    stats = torch.cat([x, y, x * x + y * y, x * y], dim=1)  # (B, 4C, H, W)
    stats = torch.matmul(torch.matmul(mh, stats), mw.t())
    mu_x, mu_y, sq, xy = stats.split(c, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    num = (2 * mu_xy + C1) * (2 * (xy - mu_xy) + C2)
    den = (mu_xx + mu_yy + C1) * (sq - mu_xx - mu_yy + C2)
    return num / den


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 5, chunk: int | None = None) -> torch.Tensor:
    """Mean SSIM per image, shape (B,).

    Computed ``chunk`` images at a time: on a CPU (default 128) the five stacked statistics
    of a chunk stay in cache, about twice as fast as one pass over a large batch; on a GPU
    (default: the whole batch) chunks would only multiply kernel launches.
    """
    if chunk is None:
        chunk = 128 if x.device.type == "cpu" else max(x.shape[0], 1)
    return torch.cat([ssim_map(x[i:i + chunk], y[i:i + chunk], window_size).flatten(1).mean(1)
                      for i in range(0, x.shape[0], chunk)])
