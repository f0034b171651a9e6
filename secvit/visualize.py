"""Paper figure 4: which tokens SECA puts in the same cluster.

For every stage with more than one cluster, the first block's attention input
(``norm1(x + cpe(x))``, recorded during ``forward_intermediates``) is clustered exactly
as the model does it
(:meth:`SECA.cluster_assignment`); each cluster gets a colour, upsampled with
nearest neighbour to the image and blended 50% over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from secvit.atomic import atomic_write
from secvit.data.inputs import data_settings, existing_root
from secvit.data.layout import find_image
from secvit.errors import SecvitError
from secvit.params import load_section

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FiguresConfig", "cluster_maps", "figure_image", "load_image", "visualize_clusters"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FiguresConfig:
    model: str  # a pretraining run of the profile
    image: str  # a file name of the profile's ImageNet (val/, else train/; any layout), or a path (with a /)


def figure_image(profile: str, params: Path) -> Path:
    """The image of ``<profile>.figures.image``: found by name in ``<profile>.data.imagenet``, or a path."""
    image = load_section(params, profile, "figures", FiguresConfig).image
    where = f"set {profile}.figures.image in {params}"
    if "/" in image:
        if not Path(image).is_file():
            raise SecvitError(f"{profile}.figures.image {image} is not a file; {where} to an image file, or to the name of an image of the ImageNet")
        return Path(image)
    root = existing_root(data_settings(profile, params, "imagenet"), profile, params, "imagenet")
    found = find_image(root, image)
    if found is None:
        raise SecvitError(f"{profile}.figures.image {image} is in neither val/ nor train/ of the ImageNet at {root}; {where} to the name of one of its images")
    return found


def load_image(path: str | Path, img_size: int) -> Image.Image:
    """RGB image resized (short side, bicubic) to ``img_size`` and centre-cropped to a square."""
    path = Path(path)
    if img_size < 1:
        raise SecvitError(f"--img-size must be positive, got {img_size}")
    if not path.is_file():
        raise SecvitError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            image = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SecvitError(f"{path} is not a readable image ({type(e).__name__}); give a JPEG or PNG file") from e
    scale = img_size / min(image.size)
    size = (max(img_size, round(image.width * scale)), max(img_size, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - img_size) // 2, (size[1] - img_size) // 2
    return image.crop((left, top, left + img_size, top + img_size))


def to_tensor(image: Image.Image) -> Tensor:
    """(1, 3, H, W) float tensor normalised with the ImageNet mean and std."""
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((array - mean) / std).unsqueeze(0)


def build_model(model_name: str, checkpoint: str | Path | None, ema: bool) -> nn.Module:
    """The registered SecViT, with the checkpoint's weights or fixed-seed random ones, in eval mode."""
    from secvit.checkpoint import create_with_weights
    from secvit.models.registry import create
    from secvit.models.secvit import SecViT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create(model_name) if checkpoint is None else create_with_weights(model_name, checkpoint, ema)
    if not isinstance(model, SecViT):
        raise SecvitError(f"{model_name} is not a SecViT model; cluster maps need one of the secvit_* models")
    return model.eval()


@torch.no_grad()
def cluster_maps(model: nn.Module, x: Tensor, head: int = 0) -> list[tuple[int, int, Tensor]]:
    """``(stage index, clusters, labels (H, W))`` for every stage with more than one cluster.

    Labels come from the first block of the stage, for attention head ``head``: one
    ``forward_intermediates`` pass (stopping after the last clustered stage) runs the model,
    and a pre-hook on the first block of each records exactly the input it clusters.
    """
    clustered = [i for i, c in enumerate(model.clusters) if c > 1]
    for i in clustered:
        heads = model.stages[i].blocks[0].attn.num_heads
        if not 0 <= head < heads:
            raise SecvitError(f"--head {head} is out of range: stage {i + 1} has {heads} heads (use 0..{heads - 1})")
    if not clustered:
        return []
    block_inputs: dict[int, tuple] = {}

    def recorder(stage: int):
        def hook(module: nn.Module, args: tuple) -> None:
            block_inputs[stage] = args

        return hook

    blocks = {i: model.stages[i].blocks[0] for i in clustered}
    handles = [block.register_forward_pre_hook(recorder(i)) for i, block in blocks.items()]
    try:
        model.forward_intermediates(x, indices=clustered, stop_early=True, intermediates_only=True)
    finally:
        for handle in handles:
            handle.remove()
    return [(i, model.clusters[i], blocks[i].cluster_assignment(*block_inputs[i])[0, head]) for i in clustered]


def cluster_palette() -> np.ndarray:
    """(40, 3) qualitative colours (tab20 then tab20b), cycled over cluster ids."""
    import matplotlib

    colors = [matplotlib.colormaps[name].colors for name in ("tab20", "tab20b")]
    return np.asarray([c for group in colors for c in group], dtype=np.float32)


def overlay(image: Image.Image, labels: Tensor) -> np.ndarray:
    """Cluster colours upsampled (nearest) to the image and blended 50% over it, as (H, W, 3) in [0, 1]."""
    base = np.asarray(image, dtype=np.float32) / 255.0
    up = F.interpolate(labels[None, None].float(), size=base.shape[:2], mode="nearest")[0, 0].long().numpy()
    palette = cluster_palette()
    return 0.5 * base + 0.5 * palette[up % len(palette)]


def render(image: Image.Image, maps: list[tuple[int, int, Tensor]], title: str, out: Path) -> Path:
    """The input image and one overlay panel per clustered stage, saved atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(maps)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.7), squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("input")
    for ax, (stage, clusters, labels) in zip(axes[0, 1:], maps):
        ax.imshow(overlay(image, labels))
        ax.set_title(f"stage {stage + 1}: {clusters} clusters")
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)
    return out


def visualize_clusters(
    image_path: str | Path,
    model_name: str,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    img_size: int = 224,
    head: int = 0,
    ema: bool = False,
) -> Path:
    """Write the cluster maps of ``model_name`` on one image as a PNG and return its path.

    ``out`` defaults to ``<image stem>-<model>-clusters.png`` in the current directory.
    Without ``checkpoint`` the model has (seeded) random weights, which the title says.
    """
    image = load_image(image_path, img_size)
    model = build_model(model_name, checkpoint, ema)
    maps = cluster_maps(model, to_tensor(image), head)
    title = f"{model_name}, head {head}" + (" (random weights)" if checkpoint is None else f" ({Path(checkpoint).name})")
    out = Path(out) if out is not None else Path(f"{Path(image_path).stem}-{model_name}-clusters.png")
    return render(image, maps, title, out)
