"""The ImageNet recipe as DeiT and the released SecViT code run it, and a smoke profile that takes the same paths.

The conformance checks are written from DeiT's description of its training (Touvron et al. 2021, and its
``main.py``/``samplers.py`` behaviour): repeated augmentation puts each sampled image in an epoch three times,
each copy augmented on its own and trained on another GPU; Mixup/CutMix draws one lambda per GPU batch and
switches between the two with probability 0.5; the lr schedule is stepped after every epoch; biases and 1-D
parameters are not weight-decayed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch
from released import LAYOUT, released_forward, released_state_dict
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, TensorDataset

from secvit.data.synthetic import make_imagenet
from secvit.engine.config import PretrainConfig, recipe_of_run
from secvit.engine.distributed import DistEnv
from secvit.engine.evaluate import evaluate
from secvit.engine.loaders import build_train_loader, set_epoch
from secvit.engine.train import build_optimizer, build_training, seed_micro_batch
from secvit.models.registry import create
from secvit.models.seca import cluster_sizes, semantic_order
from secvit.params import load_params

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def params(repo_root):
    return load_params(repo_root / "params.yaml")


def paper_recipe(params, **sizes) -> PretrainConfig:
    p = params["paper"]
    cfg = recipe_of_run(p["pretrain"], p["pretrain_speed"], p["pretrain_runs"]["secvit_tiny"], "paper")
    return dataclasses.replace(cfg, **sizes)


# ---------------------------------------------------------------------------- the two profiles

#: The settings in which the smoke profile may differ from the paper's: sizes (epochs, batches, image and crop
#: sizes, dataset sizes, iteration counts, workers, model choice) and the settings that scale with a run's length.
SIZE_SETTINGS = {
    "pretrain": {
        "epochs", "batch_size", "img_size",
        "train_crop_scale",  # crop sizes: an 8% crop of a 48-px smoke image would be 14 px
        "lr_base",  # scales with the run's length: 32 steps, not 187,500 (5e-4 per 512 images would be 3e-5)
        "warmup_epochs",  # 5 of 300 epochs is none of 2
        "ema_decay",  # an EMA horizon for a few dozen steps
    },
    "pretrain_runs": {"epochs"},
    "pretrain_speed": {"batch_per_device", "workers", "checkpoint_every_steps"},
    "complexity": {"models", "throughput_batch", "throughput_steps", "throughput_warmup"},
    "detection.overrides": {"length", "batch_per_device", "image_scale", "roi_scale", "val_every", "global_batch",
                            "score_thr"},  # what is shown: boxes of an untrained detector
    "segmentation.overrides": {"length", "batch_per_device", "image_scale", "val_every", "global_batch"},
    "detection_speed": {"workers", "checkpoint_every", "keep_checkpoints", "log_every", "log_level"},
    "segmentation_speed": {"workers", "checkpoint_every", "keep_checkpoints", "log_every", "log_level"},
    "segmentation": {"flops_size"},
    "detection": {"flops_size"},
}
#: Sections that are places and sizes, not recipe: the profile's data paths and generated sizes, device, figures.
NOT_RECIPE = {"device", "data", "figures"}


def _differences(paper, smoke, where: str) -> list[str]:
    if isinstance(paper, dict) and isinstance(smoke, dict) and where not in SIZE_SETTINGS.get(where.rsplit(".", 1)[0], ()):
        return [d for key in paper.keys() | smoke.keys() for d in _differences(paper.get(key), smoke.get(key), f"{where}.{key}" if where else key)]
    return [] if paper == smoke else [where]


def outside_sizes(paper: dict, smoke: dict) -> list[str]:
    """The settings of the recipe sections in which ``smoke`` differs from ``paper`` outside :data:`SIZE_SETTINGS`."""
    found = []
    for section in sorted(set(paper) | set(smoke)):
        if section in NOT_RECIPE:
            continue
        if section == "pretrain_runs":  # the runs smoke trains, each with its paper settings
            for run, own in smoke[section].items():
                found += [f"{section}.{run}.{d}" for d in _differences(paper[section][run], own, "") if d not in SIZE_SETTINGS[section]]
            continue
        for name in _differences(paper.get(section), smoke.get(section), ""):
            parent, _, key = name.rpartition(".")
            if key not in SIZE_SETTINGS.get(f"{section}.{parent}" if parent else section, ()):
                found.append(f"{section}.{name}" if name else section)
    return found


def test_smoke_differs_from_the_paper_only_in_sizes(params):
    paper, smoke = params["paper"], params["smoke"]
    assert outside_sizes(paper, smoke) == [], "smoke differs from paper outside the size settings"
    # every switch the paper turns on is on
    cfg = recipe_of_run(smoke["pretrain"], smoke["pretrain_speed"], smoke["pretrain_runs"]["secvit_tiny"], "smoke")
    assert cfg.repeated_aug and cfg.auto_augment and cfg.reprob > 0 and cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0
    assert cfg.smoothing > 0 and cfg.ema and cfg.drop_path > 0 and cfg.amp_dtype == "bfloat16"
    micro, accum = cfg.micro_batch(1)
    assert accum >= cfg.repeated_aug_repeats  # each copy of an image in a micro-batch of its own


@pytest.mark.parametrize(
    "section,change,found",
    [
        ("pretrain", {"mixup_alpha": 0.0}, "pretrain.mixup_alpha"),  # the old smoke profile turned these off
        ("pretrain", {"repeated_aug": False}, "pretrain.repeated_aug"),
        ("pretrain_speed", {"compile": True}, "pretrain_speed.compile"),
        ("segmentation", {"ms_flip": False}, "segmentation.ms_flip"),
    ],
)
def test_the_difference_test_sees_a_switch_turned_off(params, section, change, found):
    smoke = {**params["smoke"], section: {**params["smoke"][section], **change}}
    assert outside_sizes(params["paper"], smoke) == [found]
    runs = {**params["smoke"]["pretrain_runs"], "secvit_tiny": {"drop_path": 0.0}}
    assert outside_sizes(params["paper"], {**params["smoke"], "pretrain_runs": runs}) == ["pretrain_runs.secvit_tiny.drop_path"]


# ---------------------------------------------------------------------------- DeiT conformance of one epoch


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    make_imagenet(root, num_classes=4, train_per_class=64, val_per_class=2, size=48, seed=0)
    return root


def _epoch(root: Path, cfg: PretrainConfig, world_size: int, epoch: int = 0):
    """Every device's micro-batches of one epoch: (device, [(dataset indices, images, targets)])."""
    out = []
    for rank in range(world_size):
        env = DistEnv(rank, world_size, rank, CPU)
        loader = build_train_loader(root, cfg, env, skip_log=None)
        set_epoch(loader, epoch)
        items = list(loader.sampler)
        micro = loader.batch_size
        indices = [item[0] if isinstance(item, tuple) else item for item in items]  # (index, position) or a bare index
        batches = [(indices[b * micro : (b + 1) * micro], images, targets) for b, (images, targets) in enumerate(loader)]
        out.append((env, batches))
    return out


def _mix_kind(clean: torch.Tensor, mixed: torch.Tensor) -> tuple[str, torch.Tensor]:
    """"cutmix" or "mixup" and the lambda of each sample, read from the images: CutMix pastes a box of the
    flipped batch (each pixel is the sample's or its partner's), Mixup blends every pixel."""
    partner = clean.flip(0)
    own = (mixed == clean).all(dim=1)  # (B, H, W)
    theirs = (mixed == partner).all(dim=1)
    if bool((own | theirs).all()):
        return "cutmix", own.flatten(1).float().mean(1)
    a, b = (mixed - partner).flatten(1), (clean - partner).flatten(1)
    return "mixup", (a * b).sum(1) / (b * b).sum(1)


def test_one_epoch_of_the_paper_recipe_behaves_as_deit(params, tiny_imagenet):
    """Two devices of two micro-batches each (global batch 32), the paper recipe's loader and Mixup/CutMix."""
    cfg = paper_recipe(params, batch_size=32, batch_per_device=8, img_size=32, workers=0)
    devices = _epoch(tiny_imagenet, cfg, world_size=2)
    micro, accum = cfg.micro_batch(2)
    assert (micro, accum) == (8, 2)

    # repeated augmentation: DeiT's epoch is as long as the dataset, a third of it sampled three times
    counts = Counter(i for _, batches in devices for indices, _, _ in batches for i in indices)
    assert sum(counts.values()) == 256 and len(counts) == 86  # ceil(256 / 3) images
    assert sorted(Counter(counts.values()).items()) == [(1, 1), (3, 85)]

    # no micro-batch holds two copies of one image
    for _, batches in devices:
        for indices, _, _ in batches:
            assert len(set(indices)) == len(indices), indices

    # each copy augmented on its own
    copies: dict[int, list[torch.Tensor]] = {}
    for _, batches in devices:
        for indices, images, _ in batches:
            for i, image in zip(indices, images):
                copies.setdefault(i, []).append(image)
    pairs = [torch.equal(v[a], v[b]) for v in copies.values() for a in range(len(v)) for b in range(a + 1, len(v))]
    assert len(pairs) == 255 and sum(pairs) <= 2, sum(pairs)  # at most a chance coincidence of a 48-px image's crops

    # Mixup/CutMix: one draw per micro-batch (one lambda, one box), mixed within the micro-batch; switch p = 0.5
    training = build_training("secvit_tiny", dataclasses.replace(cfg, drop_path=0.0), 4, DistEnv(0, 2, 0, CPU), {})
    kinds, lams = [], []
    for env, batches in devices:
        for batch, (indices, images, targets) in enumerate(batches):
            seed_micro_batch(cfg, env, 0, batch, accum)
            mixed, soft = training.mixup(images.clone(), targets)
            kind, lam = _mix_kind(images, mixed)
            assert torch.allclose(lam, lam[0].expand_as(lam), atol=1e-3), (kind, lam)  # one lambda for the micro-batch
            smooth = torch.full((len(targets), 4), cfg.smoothing / 4)
            one_hot = smooth.scatter(1, targets[:, None], 1 - cfg.smoothing + cfg.smoothing / 4)
            expected = lam[0] * one_hot + (1 - lam[0]) * one_hot.flip(0)
            assert torch.allclose(soft, expected, atol=2e-2), kind  # the labels mixed with the same lambda
            kinds.append(kind)
            lams.append(round(float(lam[0]), 3))
    assert len(kinds) == 32 and 0.3 <= kinds.count("cutmix") / len(kinds) <= 0.7, kinds
    assert len(set(lams)) >= 28  # a draw of its own per micro-batch


def test_one_device_accumulating_deals_the_same_micro_batches(params, tiny_imagenet):
    """The micro-batches of one device accumulating four equal those of two devices accumulating two and
    four devices: the same images, augmented the same, in the same slots."""
    cfg = paper_recipe(params, batch_size=32, batch_per_device=8, img_size=32, workers=0)
    by_slot = {}
    for world in (1, 2, 4):
        slots = {}
        for env, batches in _epoch(tiny_imagenet, cfg, world_size=world, epoch=1):
            accum = cfg.micro_batch(world)[1]
            for batch, (indices, images, targets) in enumerate(batches):
                slot = batch // accum * world * accum + env.rank * accum + batch % accum
                slots[slot] = (indices, images, targets)
        by_slot[world] = slots
    assert by_slot[1].keys() == by_slot[2].keys() == by_slot[4].keys() and len(by_slot[1]) == 32
    for slot, (indices, images, targets) in by_slot[1].items():
        for world in (2, 4):
            other = by_slot[world][slot]
            assert other[0] == indices and torch.equal(other[1], images) and torch.equal(other[2], targets)


def test_the_lr_of_every_step_follows_the_release(params, tmp_path, monkeypatch):
    """DeiT's loop (the release's): ``for epoch: train_one_epoch(...); lr_scheduler.step(epoch)`` with timm's
    CosineLRScheduler built from the recipe; epoch 0 runs at the scheduler's start value."""
    import secvit.engine.train as train

    make_imagenet(tmp_path / "data", num_classes=2, train_per_class=16, val_per_class=2, size=32, seed=0)
    cfg = paper_recipe(params, epochs=4, warmup_epochs=2, batch_size=16, batch_per_device=16, img_size=32, workers=0,
                       checkpoint_every_steps=0)
    seen: list[tuple[int, float]] = []
    build = train.build_optimizer

    def spy(model, cfg):
        optimizer = build(model, cfg)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(train, "build_optimizer", spy)
    train.pretrain("secvit_tiny", cfg, tmp_path / "data", tmp_path / "run")

    release = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = CosineLRScheduler(release, t_initial=cfg.epochs, lr_min=cfg.min_lr, warmup_lr_init=cfg.warmup_lr,
                                  warmup_t=cfg.warmup_epochs, cycle_limit=1, t_in_epochs=True)
    expected = []
    for epoch in range(cfg.epochs):
        expected += [release.param_groups[0]["lr"]] * 2  # 32 images / 16 per step
        scheduler.step(epoch)
    assert seen == pytest.approx(expected, rel=1e-12)
    assert expected[:4] == [cfg.warmup_lr] * 4  # epochs 0 and 1 both at the warmup start


def _release_decays(name: str) -> dict[str, bool]:
    """The release's weight-decay rule (timm's ``filter_bias_and_bn``, which DeiT's and SecViT's training code
    use): no decay on biases and on parameters of at most one dimension; by released parameter name."""
    buffers = ("running_mean", "running_var", "num_batches_tracked", "RoPE.angle")
    return {key: not (len(shape) <= 1 or key.endswith(".bias")) for key, shape in LAYOUT[name] if not key.endswith(buffers)}


@pytest.mark.parametrize("name", ["secvit_tiny", "secvit_base"])
def test_weight_decay_groups_follow_the_release(params, name):
    from secvit.models.secvit import _released_name

    cfg = paper_recipe(params)
    model = create(name)
    optimizer = build_optimizer(model, cfg)
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert all(g["weight_decay"] in (0.0, cfg.weight_decay) for g in optimizer.param_groups)
    ours = {n: id(p) in decayed for n, p in model.named_parameters()}
    theirs = {_released_name(k): v for k, v in _release_decays(name).items()}
    assert ours == theirs
    if name == "secvit_base":
        assert ours["stages.3.blocks.0.ls1.gamma"]  # layer scale: decayed, as the release's (1, C, 1, 1) gammas


# ---------------------------------------------------------------------------- precision


def _labels(order: torch.Tensor, clusters: int) -> torch.Tensor:
    sizes = torch.tensor(cluster_sizes(order.shape[-1], clusters))
    in_order = torch.repeat_interleave(torch.arange(clusters), sizes).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, in_order)


@pytest.mark.parametrize("where", ["bf16 keys", "autocast"])
def test_semantic_order_sorts_float32_scores(where):
    """SECA's token order under bf16: the scores of stage 1 (3,136 tokens, head dim 32) are computed and sorted
    in float32, so the clusters are those of the keys' values (bf16 scores tie by the thousand)."""
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 2, 1, 32, generator=g) + 0.3 * torch.randn(2, 2, 3136, 32, generator=g)  # near the mean key
    if where == "bf16 keys":
        keys = keys.bfloat16()
        order = semantic_order(keys)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            order = semantic_order(keys)
    exact = keys.double()
    score = torch.nn.functional.cosine_similarity(exact.mean(2, keepdim=True), exact, dim=-1)
    expected = score.argsort(dim=-1, stable=True)
    agree = (_labels(order, 32) == _labels(expected, 32)).float().mean().item()
    assert agree > 0.995, agree


def test_semantic_order_keeps_float64_keys_in_float64():
    """Float64 keys (the parity tests with released weights) are not rounded to float32: keys whose scores lie
    within float32's resolution of one another keep their exact order."""
    g = torch.Generator().manual_seed(0)
    keys = torch.ones(1, 1, 64, 2, dtype=torch.float64)
    keys[..., 1] = 1e-5 * torch.rand(1, 1, 64, generator=g, dtype=torch.float64)  # cosines 1e-11 apart
    score = torch.nn.functional.cosine_similarity(keys.mean(2, keepdim=True), keys, dim=-1)
    assert score.float().unique().numel() < 8 < score.unique().numel()  # float32 ties them, float64 does not
    assert torch.equal(semantic_order(keys), score.argsort(dim=-1, stable=True))


def test_evaluation_takes_top1_on_float32_logits(monkeypatch):
    """Two classes whose logits differ by less than bf16's resolution (10.0 and 10.01), the larger first and then
    second: under bf16 autocast the backbone runs in bf16 but the head in float32, so top-1 tells them apart
    both ways (bf16 logits tie, and a tie is broken the same way both times)."""
    import secvit.engine.evaluate as evaluation

    monkeypatch.setattr(evaluation, "recipe_dtype", lambda amp_dtype, device: amp_dtype)  # autocast as on a GPU
    model = create("secvit_tiny", num_classes=4).eval()
    images = torch.randn(4, 3, 32, 32)
    for bias, target in (([10.0, 10.01, 0.0, 0.0], 1), ([10.01, 10.0, 0.0, 0.0], 0)):
        with torch.no_grad():
            model.head.fc.weight.zero_()
            model.head.fc.bias.copy_(torch.tensor(bias))
        loader = DataLoader(TensorDataset(images, torch.full((4,), target)), batch_size=2)
        result = evaluate(model, loader, DistEnv(0, 1, 0, CPU), "bfloat16")
        assert result["top1"] == 100.0 and result["images"] == 4, (bias, result)


def test_released_parity_under_autocast():
    """Released weights (synthetic, in the released layout) through the checkpoint filter, under bf16 autocast,
    against the released architecture in float64 (tests/test_models.py checks the float64 parity exactly): the
    logits agree within bf16 rounding (0.9% here) and rank the classes alike."""
    from secvit.models.secvit import checkpoint_filter_fn

    state = released_state_dict("secvit_tiny", seed=3)
    model = create("secvit_tiny").eval()
    model.load_state_dict(checkpoint_filter_fn(state, model))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))  # 18 tokens per cluster in stages 1-3
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = model(x).float()
    theirs = released_forward({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, "secvit_tiny", x.double()).float()
    error = ((ours - theirs).norm() / theirs.norm()).item()
    assert error < 0.02, error
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    assert (ours.topk(5).indices == theirs.topk(5).indices).float().mean() >= 0.8


def test_rand_augment_posterize_keeps_zero_bits(params):
    """The recipe's RandAugment at its largest magnitude posterizes to 0 bits (a black image, as DeiT's Pillow gave);
    the locked Pillow alone raises ValueError there, which would stop a paper run within its first minutes."""
    from PIL import Image

    from secvit.engine.loaders import train_transform

    rand_augment = next(t for t in train_transform(paper_recipe(params)).transforms if hasattr(t, "ops"))
    op = next(op for op in rand_augment.ops if op.name == "PosterizeIncreasing")
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0
    image = Image.new("RGB", (8, 8), (200, 120, 40))
    assert Image.Image.getextrema(op(image)) == ((0, 0), (0, 0), (0, 0))
    op.magnitude = 5  # 2 bits kept: 200 -> 192, 120 -> 64, 40 -> 0
    assert op(image).getpixel((0, 0)) == (192, 64, 0)
