"""Any dataset's images made the shape a run asks for (--image_size, --channels)."""
from __future__ import annotations

import torch


def reshape_images(images: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    """uint8 images (N, C, H, W) centre-cropped to a square and resized to ``image_size`` (when
    given and not already that size), then converted to ``channels`` (grey: ITU-R 601 luma, as PIL's
    "L"; colour: the grey plane three times)."""
    from torchvision.transforms.v2 import functional as TF  # here: seconds, and --help needs none of it

    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        side = min(images.shape[-2:])
        images = TF.resize(TF.center_crop(images, [side, side]), [image_size, image_size], antialias=True)
    if channels is not None and images.shape[1] != channels:
        images = (TF.rgb_to_grayscale(images) if channels == 1 else images.expand(-1, 3, -1, -1)).contiguous()
    return images
