"""The shared fit loop: AdamW, warm-up + cosine learning rate, gradient accumulation, fp16 autocast on a GPU,
early stopping on a validation score (validation loss by default, CER for speech).

Task modules supply batches, and for anything but classification a loss and a validation function; this loop
knows nothing about images, audio or text.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from training import progress

Batches = Callable[[], Iterable]
LossFn = Callable[[nn.Module, object], tuple[torch.Tensor, int]]  # (mean loss of the batch, its size)


def classification_loss(device: torch.device) -> LossFn:
    def loss(model: nn.Module, batch: object) -> tuple[torch.Tensor, int]:
        x, y = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return nn.functional.cross_entropy(model(x), y), len(y)

    return loss


@dataclass
class FitResult:
    best_epoch: int
    best_score: float  # the monitored validation score (lower is better)
    epochs_run: int
    stopped_early: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 1 %."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def evaluate_loss(model: nn.Module, batches: Batches, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``batches`` (eval mode, no gradients)."""
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    with torch.inference_mode():
        for x, y in batches():
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
    return loss_sum / max(total, 1), correct / max(total, 1)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA where torch sees a GPU, else CPU; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA GPU on this host")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def schedule(cfg) -> dict:
    """The :func:`fit` arguments a :class:`~training.config.TrainConfig` sets, the same for every trainer."""
    return {
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "warmup_fraction": cfg.warmup_fraction,
        "patience": cfg.patience,
        "accumulate": cfg.accumulate,
    }


def fit(
    model: nn.Module,
    train_batches: Batches,
    val_batches: Batches,
    *,
    steps_per_epoch: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    warmup_fraction: float,
    patience: int,
    device: torch.device,
    set_train_mode: Callable[[nn.Module], None] | None = None,
    desc: str = "train",
    loss_fn: LossFn | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    accumulate: int = 1,
    amp: bool = False,
) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of the epoch with the best validation score.

    ``set_train_mode`` puts the model into training mode (a frozen backbone keeps its BatchNorm in eval).
    ``loss_fn(model, batch)`` defaults to cross-entropy on ``(x, y)`` batches; ``validate(model)`` returns metrics
    with a ``score`` to minimise (default: validation loss and accuracy on ``val_batches``). ``accumulate``
    batches make one optimiser step; ``amp`` runs the forward pass in fp16 autocast (CUDA only).
    """
    loss_fn = loss_fn or classification_loss(device)
    if validate is None:

        def validate(m: nn.Module) -> dict[str, float]:
            val_loss, val_acc = evaluate_loss(m, val_batches, device)
            return {"val_loss": val_loss, "val_accuracy": val_acc, "score": val_loss}

    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    optimizer_steps = max(1, steps_per_epoch // accumulate) * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(optimizer_steps, warmup_fraction))
    best_score, best_epoch, best_state, bad_epochs = math.inf, 0, None, 0
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, epochs + 1):
        (set_train_mode or nn.Module.train)(model)
        seen, loss_sum = 0, 0.0
        bar = tqdm(train_batches(), total=steps_per_epoch, desc=f"{desc} epoch {epoch}/{epochs}", unit="batch")
        opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar, start=1):
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss, n = loss_fn(model, batch)
            scaler.scale(loss / accumulate).backward()
            if i % accumulate == 0 or i == steps_per_epoch:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
            seen += n
            loss_sum += loss.item() * n
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        model.eval()
        metrics = validate(model)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), **metrics}
        history.append(row)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "score"))
        tqdm.write(f"{desc} epoch {epoch}: {shown}")
        progress.epoch_done(epoch, epochs)
        score = metrics["score"]
        if score < best_score:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                tqdm.write(f"early stop: no validation improvement for {patience} epochs")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        best_score=best_score,
        epochs_run=epoch,
        stopped_early=epoch < epochs,
        seconds=time.perf_counter() - start,
        history=history,
    )
