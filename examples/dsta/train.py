"""Train DSTA (or the image regression baseline) on PoseTrack.

    python examples/dsta/train.py --config examples/dsta/configs/posetrack17_r50_3f.yaml --out runs/r50_3f
    python examples/dsta/train.py --config ... --out runs/r50_3f --resume            # continue from last.pt
    python examples/dsta/train.py --resume runs/r50_3f/last.pt --set train.epochs=30  # config from the checkpoint
    python examples/dsta/train.py --config ... --set train.lr=1e-4 train.amp=fp16 --max-steps 100
    torchrun --nproc_per_node 4 examples/dsta/train.py --config ...                 # DDP (nccl / gloo)
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 examples/dsta/train.py ...

Writes to --out: config.yaml, last.pt (every epoch, and when stopped by --max-steps or SIGTERM/SIGINT),
best.pt (best validation Total AP), metrics.csv / metrics.json (one record per epoch), val/ (the latest
validation's predictions and results.json), tb/ (TensorBoard, when installed). Checkpoints are written
atomically; `--resume` restores the model, optimizer, scheduler, grad scaler, every process's RNG states
and the position inside the epoch, so a stopped run continues as if it had not stopped (bit for bit on
CPU). Only rank 0 writes files.

Resuming keeps what the weights and the position depend on, and says what it changes: a model or data
shape key (heads, input_size, frames, ...), train.seed, or a mid-epoch world size that differs from the
checkpoint's is refused with a sentence naming it; changed schedule keys (train.epochs, lr, milestones,
gamma, betas, weight_decay) are applied to the restored optimizer / scheduler and logged; another
train.batch_size continues mid-epoch at the exact sample where the run stopped.

Nothing is lost to validation: at an epoch's end last.pt is written first (marked "validation
pending"), then the epoch is validated, then best.pt (if better) and last.pt again, then the metric files.
A run killed anywhere in between resumes by validating that epoch again, so last.pt, best.pt and the
metrics always end up agreeing. Unreadable images are skipped and counted (log and metrics), and so are
persons that cannot become a clip; an epoch in which no clip could be read stops the run (exit code 2).
User errors (config, data, checkpoint, resume) are one sentence on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import math
import signal
from collections import Counter
import sys
import time
from pathlib import Path

from dsta import engine
from dsta.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dsta.cli import add_device_argument
from dsta.config import ConfigError, load_config
from dsta.distributed import DistInfo, all_gather, broadcast, cleanup_distributed, init_distributed
from dsta.engine import AP_COLUMNS, DataError, NonFiniteLossError
from dsta.loaders import EpochSampler, SeededClips, make_clips
from dsta import posetrack_eval
from dsta.posetrack_io import AnnotationError
import stattn
import torch
import yaml
from dsta.data import collate_clips
from dsta.utils import amp_settings, get_rng_state, seed_everything, set_rng_state, write_metrics
from dsta.model import MODEL_DEFAULTS, build_model, count_parameters, plain_config, resolve_model_config
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

__all__ = ["Trainer", "train", "main", "ResumeError", "DataError"]

#: Schedule keys a resumed run may change: applied to the restored optimizer / scheduler, and logged.
SCHEDULE_KEYS = ("epochs", "lr", "milestones", "gamma", "betas", "weight_decay")


class ResumeError(ValueError):
    """A resume that would silently change the model, the data shape or the sample order."""


#: Errors the user fixes (their message is the one sentence the CLI prints, exit code 2); others are bugs.
USER_ERRORS = (ConfigError, CheckpointError, AnnotationError, ResumeError, DataError)


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_resume(saved: dict, cfg: dict, ckpt: dict, world_size: int) -> list[str]:
    """Refuse what a resume cannot change; return the lines that describe what it does change.

    Args:
        saved: the checkpoint's config; cfg: this run's config; ckpt: the checkpoint (its position).
    """
    try:
        old, new = plain_config(resolve_model_config(saved)), plain_config(resolve_model_config(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for key in MODEL_DEFAULTS:
        if key != "pretrained" and _plain(old.get(key)) != _plain(new.get(key)):
            raise ResumeError(f"resume: the checkpoint was trained with {key}={old.get(key)!r}, this run asks for "
                              f"{key}={new.get(key)!r}; a resumed run keeps the model and its input shape (drop the "
                              f"override, or start a new run with --out elsewhere)")  # fmt: skip
    t_old, t_new = saved.get("train", {}), cfg["train"]
    if int(t_old.get("seed", t_new["seed"])) != int(t_new["seed"]):
        raise ResumeError(f"resume: the checkpoint was trained with train.seed={t_old['seed']}, this run asks for "
                          f"train.seed={t_new['seed']}; the seed fixes every epoch's sample order and "
                          "augmentation")  # fmt: skip
    mid_epoch = ckpt.get("epoch_step", 0) > 0 and not ckpt.get("pending_record")
    if mid_epoch and ckpt["rng"]["world_size"] != world_size:
        raise ResumeError(f"resume: the checkpoint stopped mid-epoch with {ckpt['rng']['world_size']} process(es), "
                          f"this run has {world_size}; resume with {ckpt['rng']['world_size']}, or from an epoch's "
                          "end")  # fmt: skip
    lines = []
    for section in ("train", "data"):
        for key in sorted(set(saved.get(section, {})) | set(cfg[section])):
            a, b = _plain(saved.get(section, {}).get(key)), _plain(cfg[section].get(key))
            if a != b:
                lines.append(f"{section}.{key} changed: {a!r} -> {b!r}")
    return lines


class _StopFlag:
    """SIGTERM / SIGINT: finish the current step, save last.pt, return (a second signal interrupts at once)."""

    def __init__(self):
        self.signal, self._old = None, {}

    def __enter__(self):
        try:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: no handlers
            pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Trainer:
    """One training run: model, optimizer, data and the loop (see `train`)."""

    def __init__(self, cfg: dict, out_dir, info: DistInfo, resume=None, max_steps=None):
        t = cfg["train"]
        self.info, self.out_dir, self.t, self.d = info, Path(out_dir), t, cfg["data"]
        self.max_steps = max_steps if max_steps is not None else t["max_steps"]
        self.device = info.device
        if self.device.type == "cuda" and t["deterministic"]:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        seed_everything(int(t["seed"]))
        ckpt, changes = load_checkpoint(resume) if resume else None, []
        if ckpt:
            missing = [k for k in ("optimizer", "scheduler", "scaler", "rng") if k not in ckpt]
            if missing:
                raise ResumeError(f"resume: {resume} holds weights but no training state ({', '.join(missing)}): "
                                  "it can be evaluated or fine-tuned from, not resumed")  # fmt: skip
            changes = check_resume(ckpt["config"], cfg, ckpt, info.world_size)
        try:
            resolve_model_config(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        model = build_model({**cfg, "pretrained": None} if ckpt else cfg)  # a checkpoint holds the backbone
        if getattr(model, "pretrained_report", None) is not None:
            self.log(f"pretrained backbone {cfg['pretrained']}: {model.pretrained_report}")
        self.cfg = cfg = {**cfg, **model.config}  # resolved model keys (frames sorted, jfd, backbone name)
        if t["grad_checkpointing"]:
            if not hasattr(model.backbone, "grad_checkpointing"):
                raise ConfigError(f"train.grad_checkpointing: backbone {cfg['backbone']!r} has no such switch")
            model.backbone.grad_checkpointing = True
        model.to(self.device)
        if t["sync_bn"] and info.distributed:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        if t["optimizer"] != "adamw":
            raise ConfigError(f"train.optimizer: only 'adamw' is supported, got {t['optimizer']!r}")
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(t["lr"]),
                                           betas=tuple(float(b) for b in t["betas"]),
                                           weight_decay=float(t["weight_decay"]))  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, [int(m) for m in t["milestones"]],
                                                              float(t["gamma"]))  # fmt: skip
        self.amp, self.amp_dtype, use_scaler = amp_settings(t["amp"], self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        # epoch_sample: samples of this rank's epoch consumed (the exact resume position, whatever the batch
        # size); epoch_skipped: [clips skipped as unreadable, first message]; pending_record: the record of an
        # epoch whose validation has not been saved yet; best_epoch: the epoch best.pt holds
        self.state = {"epoch": 0, "epoch_step": 0, "epoch_sample": 0, "step": 0, "epoch_loss": [0.0, 0],
                      "epoch_skipped": [0, None], "pending_record": None, "best_metric": None, "best_epoch": None,
                      "history": []}  # fmt: skip
        if ckpt:
            self._restore(ckpt, resume, changes)
        else:
            torch.manual_seed(int(t["seed"]) + info.rank)  # same init on every rank, own dropout / drop path
        net = model
        if info.distributed:
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                          find_unused_parameters=bool(t["find_unused_parameters"]))  # fmt: skip
        self.net = torch.compile(net) if t["compile"] else net  # compile(DDP(model)), as PyTorch recommends
        self.clips, _ = make_clips(cfg, "train", train=True)
        if len(self.clips) == 0:
            raise DataError(f"no training persons in {self.d['train']}" + self._dropped_note(self.clips))
        self.sampler = EpochSampler(len(self.clips), int(t["seed"]), info.rank, info.world_size)
        self.batch_size = bs = int(t["batch_size"])
        self.per_epoch = len(self.sampler) // bs if t["drop_last"] else math.ceil(len(self.sampler) / bs)
        self.tb = None
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

                self.tb = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:  # tensorboard not installed: CSV / JSON only
                pass
        self.log(f"{cfg['model']} on {cfg['backbone']}, frames {cfg['frames']}, input {cfg['input_size']}, params (M) "
                 f"{count_parameters(model)}; {info.world_size} process(es) on {self.device}")  # fmt: skip
        self.log(f"{len(self.clips)} training clips, {self.per_epoch} steps per epoch and process, "
                 f"{t['epochs']} epochs, writing to {self.out_dir}")  # fmt: skip
        if self.clips.drop_summary():
            self.log(f"training data: {self.clips.drop_summary()}")

    def log(self, msg: str) -> None:
        if self.info.is_main:
            print(msg, flush=True)

    @staticmethod
    def _dropped_note(clips) -> str:
        summary = clips.drop_summary()
        return f" ({summary})" if summary else ""

    # ------------------------------------------------------------------------------ checkpoints
    def _restore(self, ckpt: dict, path, changes: list[str]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] and self.scaler.is_enabled():  # a disabled scaler saved {}: nothing to restore
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state.update({k: ckpt[k] for k in self.state if k in ckpt})
        s = self.state
        if "epoch_sample" not in ckpt:  # older checkpoints count the position in batches
            s["epoch_sample"] = s["epoch_step"] * int(ckpt["config"]["train"]["batch_size"])
        for line in changes:
            self.log(f"resume: {line}")
        self._apply_schedule(ckpt["config"].get("train", {}))
        rng = ckpt["rng"]
        if rng["world_size"] == self.info.world_size:
            set_rng_state(rng["states"][self.info.rank])
        else:
            self.log(f"resume: the checkpoint has the RNG states of {rng['world_size']} processes, this run has "
                     f"{self.info.world_size}: reseeding (no longer bit-exact)")  # fmt: skip
            torch.manual_seed(int(self.t["seed"]) + 1000 * self.state["step"] + self.info.rank)
        self.log(f"resumed {path}: epoch {s['epoch'] + 1}, sample {s['epoch_sample']} of the epoch, step {s['step']}")

    def _apply_schedule(self, saved: dict) -> None:
        """A restored optimizer / scheduler carries the checkpoint's lr, betas, weight decay, milestones and
        gamma; when this run's config changes any of them, the new values are put in place (the lr is
        recomputed as this run's schedule gives it at the current epoch)."""
        t = self.t
        if all(_plain(saved.get(k)) == _plain(t[k]) for k in SCHEDULE_KEYS if k != "epochs"):
            return  # unchanged: keep the restored values bit for bit
        lr, milestones, gamma = float(t["lr"]), [int(m) for m in t["milestones"]], float(t["gamma"])
        sch = self.scheduler
        now = lr * gamma ** sum(m <= sch.last_epoch for m in milestones)
        sch.base_lrs, sch.milestones, sch.gamma = [lr] * len(sch.base_lrs), Counter(milestones), gamma
        for g in self.optimizer.param_groups:
            g.update(lr=now, initial_lr=lr, betas=tuple(float(b) for b in t["betas"]),
                     weight_decay=float(t["weight_decay"]))  # fmt: skip
        sch._last_lr = [now] * len(sch.base_lrs)
        self.log(f"resume: schedule applied: lr {lr:g}, milestones {milestones}, gamma {gamma:g} -> lr {now:.3g} "
                 f"after {sch.last_epoch} epoch(s); betas {tuple(t['betas'])}, "
                 f"weight_decay {t['weight_decay']}")  # fmt: skip

    def checkpoint(self) -> dict:
        """The checkpoint dict (tensors and plain Python types only; rank 0's model; every rank's RNG)."""
        rng = all_gather(get_rng_state(), self.info)  # a collective: every rank calls it
        s = self.state
        return {
            "model": self.model.state_dict(), "config": self.cfg, "epoch": s["epoch"], "epoch_step": s["epoch_step"],
            "epoch_sample": s["epoch_sample"], "step": s["step"], "epoch_loss": list(s["epoch_loss"]),
            "epoch_skipped": list(s["epoch_skipped"]), "pending_record": s["pending_record"],
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": {"world_size": len(rng), "states": rng},
            "best_metric": s["best_metric"], "best_epoch": s["best_epoch"], "history": s["history"],
            "stattn_version": str(stattn.__version__), "torch_version": str(torch.__version__),
        }  # fmt: skip

    def save(self, *, best: bool = False, keep: bool = False) -> None:
        """best.pt before last.pt: a kill between the two leaves last.pt with the epoch's validation still
        pending, which a resume redoes (rewriting the same best.pt)."""
        ckpt = self.checkpoint()
        if not self.info.is_main:
            return
        if best:
            save_checkpoint(ckpt, self.out_dir / "best.pt")
        save_checkpoint(ckpt, self.out_dir / "last.pt")
        if keep:
            save_checkpoint(ckpt, self.out_dir / f"epoch_{ckpt['epoch']:03d}.pt")

    # ------------------------------------------------------------------------------ loop
    def _should_stop(self, stop: _StopFlag):
        """"max_steps", or rank 0's signal seen by every rank (they must stop at the same step), or None."""
        if self.max_steps and self.state["step"] >= self.max_steps:
            return "max_steps"
        return broadcast(stop.signal, self.info) if self.info.distributed else stop.signal

    def run(self) -> dict:
        """Train until `train.epochs`, `max_steps` or a signal. Returns {"model", "step", "epoch",
        "best_metric", "history", "stopped" (None, "max_steps" or the signal's name)}."""
        s, epochs, stopped = self.state, int(self.t["epochs"]), None
        if s["pending_record"] is not None:  # killed after the epoch's last.pt, before its validation was saved
            self.log(f"resume: validating epoch {s['epoch']} again (its result was not saved)")
            self._validate()
        elif s["history"] and self.info.is_main:  # a kill between last.pt and the metric files
            write_metrics(self.out_dir, s["history"])
        if self.max_steps and s["step"] >= self.max_steps:
            self.log(f"already at step {s['step']} >= max steps {self.max_steps}: nothing to do")
            stopped = "max_steps"
        elif s["epoch"] >= epochs:
            self.log(f"already trained {s['epoch']} of train.epochs={epochs} epochs: nothing to do")
        with _StopFlag() as stop:
            while s["epoch"] < epochs and stopped is None:
                t0 = time.time()
                stopped = self._train_epoch(stop)
                if stopped is not None:  # inside the epoch: save the position, no validation
                    self.save()
                    self.log(f"stopped ({stopped}) at step {s['step']} (epoch {s['epoch'] + 1}, batch "
                             f"{s['epoch_step']}/{self.per_epoch}); --resume continues from it")  # fmt: skip
                    break
                self._end_epoch(time.time() - t0)
                stopped = self._should_stop(stop)
        if self.tb is not None:
            self.tb.close()
        return {"model": self.model, "step": s["step"], "epoch": s["epoch"], "best_metric": s["best_metric"],
                "history": s["history"], "stopped": stopped}  # fmt: skip

    def _train_epoch(self, stop: _StopFlag):
        """Steps to the end of the epoch; returns None, or why it stopped before the epoch's last batch."""
        s, t, bs = self.state, self.t, self.batch_size
        self.sampler.set_epoch(s["epoch"], start=s["epoch_sample"])
        remaining = len(self.sampler)
        end = s["epoch_sample"] + (remaining // bs * bs if t["drop_last"] else remaining)  # the epoch's last sample
        # a private generator: creating the loader must not draw from the global RNG (bit-exact resume)
        loader = DataLoader(SeededClips(self.clips, int(t["seed"])), batch_size=bs,
                            sampler=self.sampler, collate_fn=collate_clips, num_workers=int(self.d["workers"]),
                            drop_last=t["drop_last"], pin_memory=self.device.type == "cuda",
                            generator=torch.Generator())  # fmt: skip
        tty = sys.stderr.isatty()
        bar = tqdm(loader, total=self.per_epoch, initial=s["epoch_step"], dynamic_ncols=True,
                   desc=f"epoch {s['epoch'] + 1}/{t['epochs']}", disable=not (self.info.is_main and tty))  # fmt: skip
        self.net.train()
        try:
            return engine.train_one_epoch(self._step, bar, s, batch_size=bs, end=end, distributed=self.info.distributed,
                                          after_step=lambda loss: self._log_step(loss, bar, tty),
                                          should_stop=lambda: self._should_stop(stop))  # fmt: skip
        finally:
            bar.close()

    def _step(self, batch) -> float:
        """One optimizer step (`engine.train_step`); returns the loss averaged over ranks."""
        s = self.state
        where = f"step {s['step'] + 1} (epoch {s['epoch'] + 1}, batch {s['epoch_step']}/{self.per_epoch})"
        value = engine.train_step(self.net, self.model, batch, self.optimizer, self.scaler, self.info,
                                  amp=(self.amp, self.amp_dtype), clip_grad=self.t["clip_grad"],
                                  where=where)  # fmt: skip
        s["step"] += 1
        return value

    def _log_step(self, loss: float, bar, tty: bool) -> None:
        s, lr = self.state, self.optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, s["step"])
        if not tty and s["step"] % int(self.t["log_every"]) == 0:
            self.log(f"epoch {s['epoch'] + 1} batch {s['epoch_step']}/{self.per_epoch} step {s['step']}: "
                     f"loss {loss:.4f} lr {lr:.2e}")  # fmt: skip

    def _end_epoch(self, seconds: float) -> None:
        """Scheduler step and last.pt (validation pending), then `_validate`. An epoch that trained on no
        clip at all (every image unreadable) is a `DataError`: nothing is saved for it."""
        s, t = self.state, self.t
        epoch = s["epoch"] + 1  # the epoch just finished, 1-based
        loss_sum, loss_count = s["epoch_loss"]
        parts = all_gather((loss_count, *s["epoch_skipped"]), self.info)  # every rank's counts
        skipped, first = sum(p[1] for p in parts), next((p[2] for p in parts if p[2]), None)
        if sum(p[0] for p in parts) == 0:
            raise DataError(f"no training clip could be read in epoch {epoch}: all {skipped} clips were skipped "
                            f"(first: {first}); check data.root and the image files")  # fmt: skip
        if skipped:
            self.log(f"epoch {epoch}: skipped {skipped} training clip(s) with unreadable images (first: {first})")
        record = {"epoch": epoch, "step": s["step"], "lr": self.optimizer.param_groups[0]["lr"],
                  "train_loss": loss_sum / max(loss_count, 1), "epoch_time_s": round(seconds, 3),
                  "skipped_clips": skipped,
                  "dropped_persons": sum(self.clips.stats["dropped_persons"].values())}  # fmt: skip
        self.scheduler.step()
        s.update(epoch=epoch, epoch_step=0, epoch_sample=0, epoch_loss=[0.0, 0], epoch_skipped=[0, None],
                 pending_record=record)  # fmt: skip
        self.save()  # the epoch's training is safe before validation runs
        self._validate()

    def _validate(self) -> None:
        """Validate the pending epoch (when due), then best.pt (if better), last.pt and the metric files."""
        s, t, d = self.state, self.t, self.d
        record = dict(s["pending_record"])
        epoch = record["epoch"]
        is_best = False
        if d["val"] and (epoch % int(t["val_every"]) == 0 or epoch == int(t["epochs"])):
            columns, result = engine.evaluate(self.model, self.cfg, self.info, self.out_dir / "val",
                                              boxes=d["val_boxes"])  # fmt: skip
            if result is not None:
                record.update(columns)
                total, best = result["Total"], s["best_metric"]
                is_best = math.isfinite(total) and (best is None or total > best)
                if is_best:
                    s["best_metric"], s["best_epoch"] = float(total), epoch
                self.log(f"epoch {epoch} validation ({d['val_boxes']} boxes):\n{posetrack_eval.format_table(result)}")
                for line in result["notes"]:
                    self.log(f"validation: {line}")
                if self.tb is not None:
                    for k in AP_COLUMNS:
                        self.tb.add_scalar(f"val/{k}", result[k], epoch)
        record["best_Total"] = s["best_metric"]
        s["history"].append(record)
        s["pending_record"] = None
        self.save(best=is_best, keep=bool(t["keep_checkpoints"]))
        if self.info.is_main:
            write_metrics(self.out_dir, s["history"])
        ap = f", Total AP {record['Total']:.2f}" if "Total" in record else ""
        self.log(f"epoch {epoch}/{t['epochs']}: loss {record['train_loss']:.4f}, {record['epoch_time_s']:.1f} s{ap}")


def train(cfg: dict, out_dir, info: DistInfo | None = None, resume=None, max_steps=None) -> dict:
    """Train with `cfg` (config.DEFAULTS lists the keys) into `out_dir`; see `Trainer.run` for the result.

    Raises:
        NonFiniteLossError: the loss became NaN / inf (nothing is saved for that step).
    """
    return Trainer(cfg, out_dir, info or DistInfo(), resume=resume, max_steps=max_steps).run()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Train DSTA on PoseTrack (one process, or DDP under torchrun).")
    p.add_argument("--config", help="YAML config (examples/dsta/configs/*.yaml); default with --resume: the "
                   "checkpoint's config")  # fmt: skip
    p.add_argument("--out", help="output folder (default: runs/<config name>, or the resumed checkpoint's folder)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help="continue from PATH, or from OUT/last.pt when no path is given")  # fmt: skip
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys: train.lr=1e-4 frames=[-2,-1,0,1,2] data.root=... (may repeat; "
                   "later values win)")  # fmt: skip
    add_device_argument(p)
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop (and save last.pt) after this many optimizer steps in total (default: train.max_steps)")
    args = p.parse_args(argv)
    if args.config is None and not args.resume and not (args.resume == "" and args.out):
        p.error("--config is required (or --resume PATH, or --resume with --out)")
    resume = None
    if args.resume is not None:
        if args.resume:
            resume = Path(args.resume)
        else:
            resume = (Path(args.out) if args.out else Path("runs") / Path(args.config).stem) / "last.pt"
        if not resume.is_file():
            p.error(f"--resume: {resume} does not exist")
    out = Path(args.out) if args.out else (resume.parent if resume else Path("runs") / Path(args.config).stem)
    info = init_distributed(args.device.type)
    try:
        base = load_checkpoint(resume)["config"] if resume and not args.config else None
        cfg = load_config(args.config, args.set, base=base)
        return train(cfg, out, info, resume=resume, max_steps=args.max_steps)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
