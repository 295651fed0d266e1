"""The training loop's pieces, as torchvision's references name them: `train_step` (one optimizer step),
`train_one_epoch` (the batches of one epoch, resumable between any two) and `evaluate` (a validation
during training). `train.Trainer` owns the run around them: model, optimizer, checkpoints, resume.

Run configs, processes, data loading, checkpoints and small helpers live in `config`, `distributed`,
`loaders`, `checkpoint` and `utils`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from dsta.distributed import DistInfo, broadcast_buffers
from dsta.evaluate import evaluate_split

__all__ = ["train_step", "train_one_epoch", "evaluate", "AP_COLUMNS", "NonFiniteLossError", "DataError"]

#: The poseval AP columns a validation adds to an epoch's record.
AP_COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the value."""


class DataError(RuntimeError):
    """Training data that cannot train anything (e.g. no clip of an epoch could be read)."""


def train_step(net, model, batch: dict, optimizer, scaler, info: DistInfo, *, amp=(False, None), clip_grad=None,
               where: str = "this step") -> float:  # fmt: skip
    """One optimizer step on a `collate_clips` batch.

    Args:
        net: the module to call (`model`, or its DDP / compiled wrapper); model: the model itself (its
            `loss` and parameters). batch: "frames" `[B, T, 3, H, W]`, "target" `[B, 17, 2]`,
            "target_weight" `[B, 17]`. amp: (autocast enabled, dtype) from `utils.amp_settings`.
        clip_grad: max gradient norm, or None; where: names the step in a `NonFiniteLossError`.

    Returns:
        the loss averaged over ranks (every rank gets the same value, so that all stop together).

    Raises:
        NonFiniteLossError: the loss is NaN / inf; raised before the optimizer step.
    """
    dev = info.device
    frames = batch["frames"].to(dev, non_blocking=True)
    target = batch["target"].to(dev, non_blocking=True)
    weight = batch["target_weight"].to(dev, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=amp[1], enabled=amp[0]):
        out = net(frames)
    loss = model.loss(out, target, weight)  # fp32, outside autocast
    value = loss.detach().clone()
    if info.distributed:  # every rank sees the same value: all stop together
        torch.distributed.all_reduce(value)
        value /= info.world_size
    value = float(value)
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"non-finite training loss {value} at {where}; stopped before the optimizer step, nothing saved for it "
            f"(last.pt is the previous save). Try a lower train.lr, train.clip_grad, or check this batch's data."
        )
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip_grad))
    scaler.step(optimizer)
    scaler.update()
    return value


def train_one_epoch(step, batches, state: dict, *, batch_size: int, end: int, distributed: bool = False,
                    after_step=None, should_stop=None) -> str | None:  # fmt: skip
    """Feed an epoch's (remaining) batches to `step`, keeping `state` current after every batch, so that
    a checkpoint taken between any two batches resumes at the exact sample.

    Args:
        step: batch -> loss (a `train_step` call that also counts state["step"]).
        batches: `collate_clips` batches of this rank's samples, in `EpochSampler` order.
        state: updated in place: "epoch_step" (batches seen), "epoch_sample" (this rank's samples
            consumed, at most `end`), "epoch_loss" [sum, count], "epoch_skipped" [clips skipped for an
            unreadable image, the first message].
        end: this rank's last sample of the epoch (its sampler length, less a dropped last batch).
        distributed: several ranks train in step: a batch with no readable clip is a `DataError`.
        after_step: called with each step's loss (progress, logs).
        should_stop: called between batches (not after the epoch's last): a reason to stop, or None.

    Returns:
        None when the epoch ends, or what `should_stop` returned.
    """
    s = state
    for batch in batches:
        s["epoch_step"] += 1
        s["epoch_sample"] = min(s["epoch_sample"] + batch_size, end)
        if batch["skipped"]:
            first = s["epoch_skipped"][1] or next(iter(batch["unreadable"]), None)
            s["epoch_skipped"] = [s["epoch_skipped"][0] + batch["skipped"], first]
        if not batch["meta"]:  # every image of the batch unreadable (counted above)
            if distributed:
                raise DataError("a whole batch was unreadable; the DDP ranks would fall out of step "
                                f"({s['epoch_skipped'][1]})")  # fmt: skip
            continue
        loss = step(batch)
        s["epoch_loss"] = [s["epoch_loss"][0] + loss, s["epoch_loss"][1] + 1]
        if after_step is not None:
            after_step(loss)
        if s["epoch_sample"] < end and should_stop is not None:  # at the last batch the epoch ends normally
            reason = should_stop()
            if reason:
                return reason
    return None


def evaluate(model, cfg: dict, info: DistInfo, out_dir, *, boxes: str = "gt") -> tuple[dict, dict | None]:
    """Validate a model in training on `cfg`'s val split (`evaluate.evaluate_split`, files under `out_dir`).

    Every rank first takes rank 0's buffers (BatchNorm statistics), so that all ranks evaluate one model.

    Returns:
        (all ranks) the epoch record's validation columns (`AP_COLUMNS`, "val_boxes", "val_skipped_clips":
        clips skipped for an unreadable image, "val_dropped_persons": persons that could not become a
        clip), `{}` when the split has no GT poses; and the full result (None then).
    """
    broadcast_buffers(model, info)
    result = evaluate_split(model, cfg, info, Path(out_dir), split="val", boxes=boxes)
    if result is None:
        return {}, None
    columns = {k: result[k] for k in AP_COLUMNS}
    columns.update(val_boxes=boxes, val_skipped_clips=result["skipped_clips"],
                   val_dropped_persons=result["dropped_persons"])  # fmt: skip
    return columns, result

