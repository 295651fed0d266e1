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
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

from dsta import engine
from dsta.cli import add_device_argument
from dsta import posetrack_eval
import stattn
import torch
import yaml
from dsta.data import collate_clips
from dsta.evaluate import evaluate_split
from dsta.model import build_model, count_parameters
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

__all__ = ["Trainer", "train", "main"]

AP_COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


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

    def __init__(self, cfg: dict, out_dir, info: engine.DistInfo, resume=None, max_steps=None):
        t = cfg["train"]
        self.info, self.out_dir, self.t, self.d = info, Path(out_dir), t, cfg["data"]
        self.max_steps = max_steps if max_steps is not None else t["max_steps"]
        self.device = info.device
        if self.device.type == "cuda" and t["deterministic"]:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        engine.seed_everything(int(t["seed"]))
        ckpt = engine.load_checkpoint(resume) if resume else None
        model = build_model({**cfg, "pretrained": None} if ckpt else cfg)  # a checkpoint holds the backbone
        if getattr(model, "pretrained_report", None) is not None:
            self.log(f"pretrained backbone {cfg['pretrained']}: {model.pretrained_report}")
        self.cfg = cfg = {**cfg, **model.config}  # resolved model keys (frames sorted, jfd, backbone name)
        if t["grad_checkpointing"]:
            if not hasattr(model.backbone, "grad_checkpointing"):
                raise ValueError(f"train.grad_checkpointing: backbone {cfg['backbone']!r} has no such switch")
            model.backbone.grad_checkpointing = True
        model.to(self.device)
        if t["sync_bn"] and info.distributed:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        if t["optimizer"] != "adamw":
            raise ValueError(f"train.optimizer: only 'adamw' is supported, got {t['optimizer']!r}")
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(t["lr"]),
                                           betas=tuple(float(b) for b in t["betas"]),
                                           weight_decay=float(t["weight_decay"]))  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, [int(m) for m in t["milestones"]],
                                                              float(t["gamma"]))  # fmt: skip
        self.amp, self.amp_dtype, use_scaler = engine.amp_settings(t["amp"], self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.state = {"epoch": 0, "epoch_step": 0, "step": 0, "epoch_loss": [0.0, 0], "best_metric": None,
                      "history": []}  # fmt: skip
        if ckpt:
            self._restore(ckpt, resume)
        else:
            torch.manual_seed(int(t["seed"]) + info.rank)  # same init on every rank, own dropout / drop path
        net = model
        if info.distributed:
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                          find_unused_parameters=bool(t["find_unused_parameters"]))  # fmt: skip
        self.net = torch.compile(net) if t["compile"] else net  # compile(DDP(model)), as PyTorch recommends
        self.clips, _ = engine.make_clips(cfg, "train", train=True)
        if len(self.clips) == 0:
            raise ValueError(f"no training persons in {self.d['train']}")
        self.sampler = engine.EpochSampler(len(self.clips), int(t["seed"]), info.rank, info.world_size)
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

    def log(self, msg: str) -> None:
        if self.info.is_main:
            print(msg, flush=True)

    # ------------------------------------------------------------------------------ checkpoints
    def _restore(self, ckpt: dict, path) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state.update({k: ckpt[k] for k in self.state if k in ckpt})
        rng = ckpt["rng"]
        if rng["world_size"] == self.info.world_size:
            engine.set_rng_state(rng["states"][self.info.rank])
        else:
            self.log(f"resume: the checkpoint has the RNG states of {rng['world_size']} processes, this run has "
                     f"{self.info.world_size}: reseeding (no longer bit-exact)")  # fmt: skip
            torch.manual_seed(int(self.t["seed"]) + 1000 * self.state["step"] + self.info.rank)
        s = self.state
        self.log(f"resumed {path}: epoch {s['epoch'] + 1}, batch {s['epoch_step']}, step {s['step']}")

    def checkpoint(self) -> dict:
        """The checkpoint dict (tensors and plain Python types only; rank 0's model; every rank's RNG)."""
        rng = engine.all_gather(engine.get_rng_state(), self.info)  # a collective: every rank calls it
        s = self.state
        return {
            "model": self.model.state_dict(), "config": self.cfg, "epoch": s["epoch"], "epoch_step": s["epoch_step"],
            "step": s["step"], "epoch_loss": list(s["epoch_loss"]), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": {"world_size": len(rng), "states": rng}, "best_metric": s["best_metric"], "history": s["history"],
            "stattn_version": str(stattn.__version__), "torch_version": str(torch.__version__),
        }  # fmt: skip

    def save(self, *, best: bool = False, keep: bool = False) -> None:
        ckpt = self.checkpoint()
        if not self.info.is_main:
            return
        engine.save_checkpoint(ckpt, self.out_dir / "last.pt")
        if best:
            engine.save_checkpoint(ckpt, self.out_dir / "best.pt")
        if keep:
            engine.save_checkpoint(ckpt, self.out_dir / f"epoch_{ckpt['epoch']:03d}.pt")

    # ------------------------------------------------------------------------------ loop
    def _stop_requested(self, stop: _StopFlag):
        """Rank 0's signal, seen by every rank (they must stop at the same step)."""
        return engine.broadcast(stop.signal, self.info) if self.info.distributed else stop.signal

    def run(self) -> dict:
        """Train until `train.epochs`, `max_steps` or a signal. Returns {"model", "step", "epoch",
        "best_metric", "history", "stopped" (None, "max_steps" or the signal's name)}."""
        s, epochs, stopped = self.state, int(self.t["epochs"]), None
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
                if self.max_steps and s["step"] >= self.max_steps:
                    stopped = "max_steps"
                else:
                    stopped = self._stop_requested(stop)
        if self.tb is not None:
            self.tb.close()
        return {"model": self.model, "step": s["step"], "epoch": s["epoch"], "best_metric": s["best_metric"],
                "history": s["history"], "stopped": stopped}  # fmt: skip

    def _train_epoch(self, stop: _StopFlag):
        """Steps to the end of the epoch; returns None, or why it stopped before the epoch's last batch."""
        s, t = self.state, self.t
        epoch = s["epoch"]
        self.sampler.set_epoch(epoch, start=s["epoch_step"] * self.batch_size)
        # a private generator: creating the loader must not draw from the global RNG (bit-exact resume)
        loader = DataLoader(engine.SeededClips(self.clips, int(t["seed"])), batch_size=self.batch_size,
                            sampler=self.sampler, collate_fn=collate_clips, num_workers=int(self.d["workers"]),
                            drop_last=t["drop_last"], pin_memory=self.device.type == "cuda",
                            generator=torch.Generator())  # fmt: skip
        tty = sys.stderr.isatty()
        bar = tqdm(loader, total=self.per_epoch, initial=s["epoch_step"], dynamic_ncols=True,
                   desc=f"epoch {epoch + 1}/{t['epochs']}", disable=not (self.info.is_main and tty))  # fmt: skip
        self.net.train()
        try:
            for batch in bar:
                s["epoch_step"] += 1
                if batch is None:  # every image of the batch unreadable (the dataset counts them)
                    if self.info.distributed:
                        raise RuntimeError("a whole batch was unreadable; the DDP ranks would fall out of step")
                    continue
                loss = self._step(batch)
                s["epoch_loss"] = [s["epoch_loss"][0] + loss, s["epoch_loss"][1] + 1]
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
                if self.tb is not None:
                    self.tb.add_scalar("train/loss", loss, s["step"])
                if not tty and s["step"] % int(t["log_every"]) == 0:
                    self.log(f"epoch {epoch + 1} batch {s['epoch_step']}/{self.per_epoch} step {s['step']}: "
                             f"loss {loss:.4f} lr {lr:.2e}")  # fmt: skip
                if s["epoch_step"] < self.per_epoch:  # at the last batch the epoch ends normally
                    if self.max_steps and s["step"] >= self.max_steps:
                        return "max_steps"
                    flag = self._stop_requested(stop)
                    if flag:
                        return flag
        finally:
            bar.close()
        return None

    def _step(self, batch) -> float:
        """One optimizer step; returns the loss averaged over ranks. A non-finite loss stops the run."""
        s, dev = self.state, self.device
        frames = batch["frames"].to(dev, non_blocking=True)
        target = batch["target"].to(dev, non_blocking=True)
        weight = batch["target_weight"].to(dev, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.net(frames)
        loss = self.model.loss(out, target, weight)  # fp32, outside autocast
        value = loss.detach().clone()
        if self.info.distributed:  # every rank sees the same value: all stop together
            torch.distributed.all_reduce(value)
            value /= self.info.world_size
        value = float(value)
        if not math.isfinite(value):
            raise engine.NonFiniteLossError(
                f"non-finite training loss {value} at step {s['step'] + 1} (epoch {s['epoch'] + 1}, batch "
                f"{s['epoch_step']}/{self.per_epoch}); stopped before the optimizer step, nothing saved for it "
                f"(last.pt is the previous save). Try a lower train.lr, train.clip_grad, or check this batch's data."
            )
        self.scaler.scale(loss).backward()
        if self.t["clip_grad"]:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.t["clip_grad"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        s["step"] += 1
        return value

    def _end_epoch(self, seconds: float) -> None:
        """Scheduler step, validation, metrics files, last.pt (+ best.pt)."""
        s, t, d = self.state, self.t, self.d
        epoch = s["epoch"] + 1  # the epoch just finished, 1-based
        loss_sum, loss_count = s["epoch_loss"]
        record = {"epoch": epoch, "step": s["step"], "lr": self.optimizer.param_groups[0]["lr"],
                  "train_loss": loss_sum / max(loss_count, 1), "epoch_time_s": round(seconds, 3)}  # fmt: skip
        self.scheduler.step()
        s["epoch"], s["epoch_step"], s["epoch_loss"] = epoch, 0, [0.0, 0]
        is_best = False
        if d["val"] and (epoch % int(t["val_every"]) == 0 or epoch == int(t["epochs"])):
            engine.broadcast_buffers(self.model, self.info)
            result = evaluate_split(self.model, self.cfg, self.info, self.out_dir / "val", split="val",
                                    boxes=d["val_boxes"])  # fmt: skip
            if result is not None:
                record.update({k: result[k] for k in AP_COLUMNS}, val_boxes=d["val_boxes"])
                total, best = result["Total"], s["best_metric"]
                is_best = math.isfinite(total) and (best is None or total > best)
                if is_best:
                    s["best_metric"] = float(total)
                self.log(f"epoch {epoch} validation ({d['val_boxes']} boxes):\n{posetrack_eval.format_table(result)}")
                if self.tb is not None:
                    for k in AP_COLUMNS:
                        self.tb.add_scalar(f"val/{k}", result[k], epoch)
        record["best_Total"] = s["best_metric"]
        s["history"].append(record)
        if self.info.is_main:
            engine.write_metrics(self.out_dir, s["history"])
        self.save(best=is_best, keep=bool(t["keep_checkpoints"]))
        ap = f", Total AP {record['Total']:.2f}" if "Total" in record else ""
        self.log(f"epoch {epoch}/{t['epochs']}: loss {record['train_loss']:.4f}, {seconds:.1f} s{ap}")


def train(cfg: dict, out_dir, info: engine.DistInfo | None = None, resume=None, max_steps=None) -> dict:
    """Train with `cfg` (engine.DEFAULTS lists the keys) into `out_dir`; see `Trainer.run` for the result.

    Raises:
        NonFiniteLossError: the loss became NaN / inf (nothing is saved for that step).
    """
    return Trainer(cfg, out_dir, info or engine.DistInfo(), resume=resume, max_steps=max_steps).run()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Train DSTA on PoseTrack (one process, or DDP under torchrun).")
    p.add_argument("--config", help="YAML config (examples/dsta/configs/*.yaml); default with --resume: the "
                   "checkpoint's config")  # fmt: skip
    p.add_argument("--out", help="output folder (default: runs/<config name>, or the resumed checkpoint's folder)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help="continue from PATH, or from OUT/last.pt when no path is given")  # fmt: skip
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config keys: train.lr=1e-4 frames=[-2,-1,0,1,2] data.root=...")  # fmt: skip
    add_device_argument(p)
    p.add_argument("--max-steps", type=int, help="stop (and save last.pt) after this many optimizer steps in total")
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
    info = engine.init_distributed(args.device.type)
    try:
        base = engine.load_checkpoint(resume)["config"] if resume and not args.config else None
        cfg = engine.load_config(args.config, args.set, base=base)
        return train(cfg, out, info, resume=resume, max_steps=args.max_steps)
    except engine.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    finally:
        engine.cleanup_distributed()


if __name__ == "__main__":
    main()
