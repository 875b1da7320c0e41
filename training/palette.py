"""The learned palette generator (the seed's method, small and faithful) and the palette evaluation.

1. Adversarial fit: a conv generator maps a 64x64 image to a palette for every size 2..12 (one head each). A critic
   sees (image, palette) pairs and learns to tell the generator's palettes from k-means palettes of the same image
   (:func:`tasks.palette.kmeans`, the baseline); the generator also pays a set distance (Chamfer) to them.
2. Chroma fine-tuning by reinforcement learning: the generator's colours, moved to YCbCr, are the mean of a
   Gaussian policy over luma and chroma; sampled palettes earn a palette-quality reward (minus the mean CIEDE2000
   from the image's pixels to their nearest colour, minus a penalty for near-duplicate colours), and REINFORCE
   with the mean palette's reward as baseline moves the generator towards better ones.

Evaluation (:func:`evaluate`): on held-out real photos (scikit-image scenes training never sees, whole and in
quadrants), the mean CIEDE2000 from each pixel (20,000 sampled at full resolution) to its nearest palette colour
and the smallest CIEDE2000 between two palette colours, for k-means, k-medians, the generator, colorthief and
pylette; on held-out synthetic images, the distance from each planted colour to the nearest palette colour.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from tasks import palette as P
from tasks.spec import PaletteSpec, resolve
from training import progress
from training.config import TrainConfig
from training.datasets import swatches
from training.fit import FitResult, pick_device

TRAIN_PIXELS = 1024  # pixels per training image for targets and validation
REWARD_PIXELS = 512
EVAL_PIXELS = 20_000
VAL_SIZES = (3, 5, 8)
CHAMFER_WEIGHT = 20.0
POLICY_SIGMA = 0.02  # YCbCr units (0..1): about 5 of 255 levels
POLICY_SAMPLES = 4
# BT.601 full range: YCbCr = M @ sRGB + offset
YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
YCC_OFFSET = np.array([0.0, 0.5, 0.5])
PEERS = ("colorthief", "pylette")


def _block(cin: int, cout: int, norm: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, 2, 1)]
    layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)] if norm else [nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """(B, 3, S, S) scaled CIELAB (:func:`tasks.palette.generator_input`) -> (B, R, 3) CIELAB colours, R the sum of
    the palette sizes; :func:`tasks.palette.head_offsets` says where each size's rows start.

    Each palette colour is a weighted mean of the image's colours at half resolution: the network predicts, per
    colour, where in the image to look (a softmax over positions from local features and the image's global
    context). Colours therefore come from the image's own colours (a mean in CIELAB can still fall just outside
    sRGB; :func:`tasks.palette.lab_to_srgb` clips it).
    """

    def __init__(self, sizes: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        self.width = width
        w = 2 * width

        def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, dilation, dilation), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(3, width), *conv(width, w, stride=2), *conv(w, w, dilation=2), *conv(w, w, dilation=4)
        )
        self.attend = nn.Conv2d(2 * w, sum(sizes), 1)
        self.register_buffer("shift", torch.tensor(P.LAB_SHIFT))
        self.register_buffer("scale", torch.tensor(P.LAB_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, 2w, S/2, S/2)
        context = f.mean((2, 3), keepdim=True).expand_as(f)
        weights = torch.softmax(self.attend(torch.cat([f, context], 1)).flatten(2), -1)  # (B, R, S*S/4)
        colours = weights @ nn.functional.avg_pool2d(x, 2).flatten(2).transpose(1, 2)  # (B, R, 3) scaled
        return self.shift + self.scale * colours


class Critic(nn.Module):
    """(image, palette of n colours as CIELAB / LAB_SCALE) -> logit that the palette is a k-means palette of the image.
    Colours are encoded one by one and pooled, so the order of a palette does not matter."""

    def __init__(self, max_colors: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.image = nn.Sequential(
            _block(3, w, False), _block(w, 2 * w, False), _block(2 * w, 2 * w, False), nn.AdaptiveAvgPool2d(1)
        )
        self.colour = nn.Sequential(nn.Linear(3 + 2 * w, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2))
        self.size = nn.Embedding(max_colors + 1, 16)
        self.out = nn.Sequential(nn.Linear(128 + 2 * w + 16, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        img = self.image(x).flatten(1)
        per = self.colour(torch.cat([colours, img[:, None].expand(-1, colours.shape[1], -1)], -1))
        n = torch.full((len(x),), colours.shape[1], dtype=torch.long, device=x.device)
        return self.out(torch.cat([per.mean(1), per.amax(1), img, self.size(n)], 1)).squeeze(1)


def checkpoint(model: Generator, spec: PaletteSpec) -> dict:
    return {"arch": {"sizes": list(model.sizes), "width": model.width}, "input_size": spec.input_size,
            "state_dict": model.state_dict()}  # fmt: skip


def from_checkpoint(path) -> Generator:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = Generator(tuple(ckpt["arch"]["sizes"]), ckpt["arch"]["width"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


@dataclass
class Items:
    """Prepared images: generator inputs (N, 3, S, S), CIELAB pixel samples (N, TRAIN_PIXELS, 3) and k-means
    target palettes per size, {n: (N, n, 3)} CIELAB."""

    x: np.ndarray
    pixels: np.ndarray
    targets: dict[int, np.ndarray]


def prepare(images: list[np.ndarray], spec: PaletteSpec, desc: str) -> Items:
    xs, pixels, targets = [], [], {n: [] for n in range(spec.min_colors, spec.max_colors + 1)}
    for img in tqdm(images, desc=f"k-means targets ({desc})", unit="image"):
        thumb = P.thumbnail(Image.fromarray(img), spec.thumbnail)
        xs.append(P.generator_input(thumb, spec))
        px = P.srgb_to_lab(P.sample(thumb.reshape(-1, 3), TRAIN_PIXELS))
        px = px[np.arange(TRAIN_PIXELS) % len(px)]  # tiny images: repeat pixels to a fixed count
        pixels.append(px)
        for n in targets:
            c = P.extract(px, n, "kmeans")
            targets[n].append(c[np.arange(n) % len(c)])  # fewer distinct colours than n: repeat them
    return Items(
        np.stack(xs),
        np.stack(pixels).astype(np.float32),
        {n: np.stack(v).astype(np.float32) for n, v in targets.items()},
    )


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric set distance between palettes (B, n, 3) and (B, m, 3), per item (B,)."""
    d = torch.cdist(a, b)
    return d.min(2).values.mean(1) + d.min(1).values.mean(1)


def to_ycc(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB (..., 3) -> YCbCr (BT.601 full range, 0..1) through sRGB, differentiable."""
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = torch.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * torch.tensor(P._WHITE, dtype=lab.dtype)
    lin = (xyz @ torch.tensor(P._XYZ2RGB.T, dtype=lab.dtype)).clamp(1e-6, 1)
    srgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return srgb @ torch.tensor(YCC.T, dtype=lab.dtype) + torch.tensor(YCC_OFFSET, dtype=lab.dtype)


def ycc_to_lab(ycc: np.ndarray) -> np.ndarray:
    return P.srgb_to_lab(np.clip((ycc - YCC_OFFSET) @ np.linalg.inv(YCC).T, 0, 1))


def reconstruction(lab: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Mean CIEDE2000 from images' pixels (B, P, 3) to the nearest colour of palettes (..., B, n, 3) -> (..., B)."""
    return P.ciede2000(pixels[..., :, None, :], lab[..., None, :, :]).min(-1).mean(-1)


def reward(lab: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Palette quality (..., B): minus :func:`reconstruction`, minus a penalty for two colours closer than 3
    CIEDE2000 (a wasted palette slot)."""
    pair = P.ciede2000(lab[..., :, None, :], lab[..., None, :, :]) + np.eye(lab.shape[-2]) * 1e9
    return -reconstruction(lab, pixels) - np.maximum(0.0, 3.0 - pair.min((-1, -2)))


def recon_score(model: Generator, items: Items, device: torch.device, sizes=VAL_SIZES) -> float:
    """Mean CIEDE2000 reconstruction error of the generator's palettes over ``sizes``: the validation score."""
    offsets = P.head_offsets()
    model.eval()
    with torch.inference_mode():
        out = torch.cat(
            [model(torch.from_numpy(items.x[i : i + 256]).to(device)).cpu() for i in range(0, len(items.x), 256)]
        )
    out = out.numpy()
    px = items.pixels[:, :REWARD_PIXELS].astype(np.float64)
    errs = [reconstruction(out[:, offsets[n] : offsets[n] + n].astype(np.float64), px).mean() for n in sizes]
    return float(np.mean(errs))


@dataclass
class PaletteResult:
    model: Generator
    metrics: dict
    fit: FitResult
    finetune: list[dict]
    sizes: dict[str, int]
    source: str
    cleanup: Callable[[], None] = field(default=lambda: None)


def adversarial_fit(model, critic, train, val, cfg, device) -> FitResult:
    """Generator against critic; early stopping on the validation reconstruction score."""
    rng = np.random.default_rng(cfg.seed)
    sizes = sorted(train.targets)
    offsets = P.head_offsets()
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    scale = torch.tensor(P.LAB_SCALE, device=device)
    best, best_state, best_epoch, bad, history = np.inf, None, 0, 0, []
    start = time.perf_counter()
    epoch = 0
    steps = max(1, len(train.x) // cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        progress.epoch_done(epoch - 1, cfg.epochs + cfg.finetune_epochs)
        model.train()
        critic.train()
        order = rng.permutation(len(train.x))
        bar = tqdm(range(steps), desc=f"adversarial epoch {epoch}/{cfg.epochs}", unit="batch")
        sums = np.zeros(3)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            n = int(rng.choice(sizes))
            x = torch.from_numpy(train.x[idx]).to(device)
            real = torch.from_numpy(train.targets[n][idx]).to(device) / scale
            fake = model(x)[:, offsets[n] : offsets[n] + n] / scale
            ones, zeros = torch.ones(len(idx), device=device), torch.zeros(len(idx), device=device)
            loss_c = bce(critic(x, real), ones) + bce(critic(x, fake.detach()), zeros)
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_c.step()
            adv = bce(critic(x, fake), ones)
            dist = chamfer(fake, real).mean()
            loss_g = adv + CHAMFER_WEIGHT * dist
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums += [loss_c.item(), adv.item(), dist.item()]
            bar.set_postfix(critic=f"{sums[0] / (step + 1):.3f}", chamfer=f"{sums[2] / (step + 1):.4f}")
        score = recon_score(model, val, device)
        row = {"epoch": epoch, "critic_loss": sums[0] / steps, "adversarial_loss": sums[1] / steps,
               "chamfer": sums[2] / steps, "val_delta_e": score}  # fmt: skip
        history.append(row)
        tqdm.write(f"adversarial epoch {epoch}: chamfer {row['chamfer']:.4f}, validation mean dE2000 {score:.3f}")
        if score < best:
            best, best_epoch, bad, best_state = score, epoch, 0, copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                tqdm.write(f"early stop: no validation improvement for {cfg.patience} epochs")
                break
    model.load_state_dict(best_state)
    return FitResult(best_epoch, best, epoch, epoch < cfg.epochs, time.perf_counter() - start, history)


def chroma_finetune(model, train, val, cfg, device, start_score: float) -> list[dict]:
    """REINFORCE over YCbCr moves of the generator's colours (see the module docstring). Keeps the weights of the
    best validation score, the adversarial fit's included, so fine-tuning can only help on validation."""
    rng = np.random.default_rng(cfg.seed + 1)
    sizes = sorted(train.targets)
    offsets = P.head_offsets()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr / 10)
    best, best_state, history = start_score, copy.deepcopy(model.state_dict()), []
    steps = max(1, len(train.x) // cfg.batch_size)
    for epoch in range(1, cfg.finetune_epochs + 1):
        progress.epoch_done(cfg.epochs + epoch - 1, cfg.epochs + cfg.finetune_epochs)
        model.train()
        order = rng.permutation(len(train.x))
        gains = []
        for step in tqdm(range(steps), desc=f"chroma fine-tuning {epoch}/{cfg.finetune_epochs}", unit="batch"):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            n = int(rng.choice(sizes))
            mean = to_ycc(model(torch.from_numpy(train.x[idx]).to(device))[:, offsets[n] : offsets[n] + n].double())
            mu = mean.detach().cpu().numpy()
            actions = mu + POLICY_SIGMA * rng.standard_normal((POLICY_SAMPLES, *mu.shape))
            pixels = train.pixels[idx, :REWARD_PIXELS].astype(np.float64)
            advantage = reward(ycc_to_lab(actions), pixels) - reward(ycc_to_lab(mu), pixels)  # (S, B)
            a = torch.from_numpy(actions).to(device)
            log_prob = -((a - mean) ** 2).sum((-1, -2)) / (2 * POLICY_SIGMA**2)  # (S, B)
            loss = -(torch.from_numpy(advantage).to(device) * log_prob).mean() * POLICY_SIGMA**2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            gains.append(float(advantage.max(0).mean()))
        score = recon_score(model, val, device)
        history.append({"epoch": epoch, "best_sample_gain": float(np.mean(gains)), "val_delta_e": score})
        tqdm.write(f"chroma fine-tuning {epoch}: validation mean dE2000 {score:.3f} (before: {start_score:.3f})")
        if score < best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return history


def train(spec: PaletteSpec, cfg: TrainConfig) -> PaletteResult:
    if cfg.data is not None:
        raise ValueError("palette trains on synthetic images and scikit-image's photos: use --synthetic N")
    if cfg.freeze != "none" or cfg.pretrained or cfg.input_size:
        raise ValueError("--freeze, --pretrained and --input-size do not apply to the palette generator")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    images, _ = resolve(spec.synthetic)(cfg.synthetic, seed=cfg.seed)
    n_val = max(1, int(len(images) * cfg.val_fraction))
    n_photo = max(1, cfg.synthetic // 4)
    train_imgs = images[n_val:] + swatches.photo_crops(n_photo, seed=cfg.seed)
    val_imgs = images[:n_val] + swatches.photo_crops(max(1, n_val // 4), seed=cfg.seed + 1)
    if cfg.limit_batches:
        train_imgs = train_imgs[: cfg.limit_batches * cfg.batch_size]
    train_items, val_items = prepare(train_imgs, spec, "train"), prepare(val_imgs, spec, "validation")
    sizes = tuple(range(spec.min_colors, spec.max_colors + 1))
    model = Generator(sizes).to(device)
    critic = Critic(spec.max_colors).to(device)
    fit = adversarial_fit(model, critic, train_items, val_items, cfg, device)
    finetune = (
        chroma_finetune(model, train_items, val_items, cfg, device, fit.best_score) if cfg.finetune_epochs else []
    )
    model = model.cpu().eval()
    metrics = evaluate(spec, generator_runner(model), cfg.test_size or 200, cfg.test_seed)
    metrics["validation"] = {
        "adversarial": fit.best_score,
        "after_finetune": recon_score(model, val_items, torch.device("cpu")),
    }
    return PaletteResult(
        model=model,
        metrics=metrics,
        fit=fit,
        finetune=finetune,
        sizes={"train": len(train_imgs), "val": len(val_imgs), "train_photo_crops": n_photo},
        source=f"synthetic:{cfg.synthetic} + crops of scikit-image photos {', '.join(swatches.TRAIN_PHOTOS)}",
    )


def generator_runner(model: Generator) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


# --- evaluation ---------------------------------------------------------------------------------------------------


def peer_colours(method: str, img: Image.Image, n: int) -> np.ndarray:
    """A peer's palette (K, 3) uint8 sRGB of ``img``, its default mode. colorthief may return more than n colours;
    the first n are kept."""
    if method == "colorthief":
        from colorthief import ColorThief

        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return np.array(ColorThief(buf).get_palette(color_count=n), dtype=np.uint8)[:n]
    if method == "pylette":
        from pylette import extract_colors

        return np.array([c.rgb for c in extract_colors(np.asarray(img), palette_size=n).colors], dtype=np.uint8)
    raise ValueError(f"unknown peer {method!r}")


def palette_of(method: str, img: Image.Image, n: int, run_generator, spec: PaletteSpec = P.PALETTE) -> np.ndarray:
    """The CIELAB colours (K, 3) a method gives for ``img`` at ``n`` colours, exactly as the service would answer
    (snapped to 8-bit sRGB)."""
    if method in PEERS:
        return P.srgb_to_lab(peer_colours(method, img, n))
    thumb = P.thumbnail(img, spec.thumbnail)
    px = P.image_pixels(thumb, spec)
    if method == "generator":
        out = run_generator(P.generator_input(thumb, spec)[None])[0]
        start = P.head_offsets(spec)[n]
        colours = out[start : start + n]
    else:
        colours = P.extract(px, n, method)
    return P.finish(colours, px).lab


def eval_pixels(img: Image.Image) -> np.ndarray:
    """The pixels a palette is scored on: EVAL_PIXELS sampled at full resolution (a fixed seed, not the one any
    method fits on), CIELAB."""
    return P.srgb_to_lab(P.sample(np.asarray(img.convert("RGB")).reshape(-1, 3), EVAL_PIXELS, seed=99))


def evaluate(spec: PaletteSpec, run_generator, synthetic: int, seed: int, n: int = 5) -> dict:
    """Held-out photos at ``n`` colours and ``synthetic`` held-out synthetic images (from ``seed``) at their planted
    count, every method and peer in the same run (see the module docstring)."""
    methods = (*spec.methods, *PEERS)
    photos = swatches.held_out_photos()
    recon = {m: [] for m in methods}
    div = {m: [] for m in methods}
    for _name, img in tqdm(photos, desc=f"held-out photos, {n} colours", unit="image"):
        px = eval_pixels(img)
        for m in methods:
            lab = palette_of(m, img, n, run_generator, spec)
            recon[m].append(P.reconstruction_error(px, lab))
            div[m].append(P.diversity(lab))
    images, planted = resolve(spec.synthetic)(synthetic, seed=seed)
    planted_d = {m: [] for m in methods}
    for img, colours in tqdm(list(zip(images, planted, strict=True)), desc="held-out synthetic", unit="image"):
        pil = Image.fromarray(img)
        for m in methods:
            lab = palette_of(m, pil, len(colours), run_generator, spec)
            planted_d[m].append(float(P.distances(P.srgb_to_lab(colours), lab).min(1).mean()))
    photo = {m: {"mean_delta_e": float(np.mean(recon[m])), "min_pair_delta_e": float(np.mean(div[m]))} for m in methods}
    peer = min(PEERS, key=lambda m: photo[m]["mean_delta_e"])
    ours = min(spec.methods, key=lambda m: photo[m]["mean_delta_e"])
    for m in spec.methods:
        photo[m]["vs_best_peer"] = 1 - photo[m]["mean_delta_e"] / photo[peer]["mean_delta_e"]
    return {
        "photos": photo,
        "photos_n_colors": n,
        "photos_images": [name for name, _ in photos],
        "synthetic_planted_delta_e": {m: float(np.mean(v)) for m, v in planted_d.items()},
        "synthetic_images": len(images),
        "best_peer": peer,
        "best_method": ours,
    }
