"""The demo's report (examples/dsta/demo.py): OUT/report.md, OUT/report.json and OUT/report.png.

`write_report(out, settings=, gen=, runs=, video=, timings=, benchmark=, stage1=, sweep=)` returns the
JSON document, whose "summary" is the line the demo prints ("DSTA mAP 61.2 vs image baseline 48.7
(+12.5) on synthetic val ...; rescuable joints ..."), and "sweep_line" the comparison with the
multi-seed sweep when there is one. Numbers are reported as they come; when DSTA does not beat the
baseline the summary says so.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["write_report", "summary_line", "split_table", "sweep_line", "plot"]

COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


def _f(x, nd=1) -> str:
    return "nan" if x is None or not math.isfinite(float(x)) else f"{float(x):.{nd}f}"


def _diff(a, b) -> float:
    return float(a) - float(b)


def summary_line(dsta: dict, base: dict, boxes: str = "GT boxes", split: dict | None = None) -> str:
    """One line: both models' Total AP, and with `split` ({model: {"rescuable": .., "clean": ..}}) the
    AP on the rescuable and the clean joints."""
    d, b = float(dsta["Total"]), float(base["Total"])
    if not (math.isfinite(d) and math.isfinite(b)):
        return f"DSTA mAP {_f(d)} vs image baseline {_f(b)} on synthetic val ({boxes}): not comparable (NaN)"
    line = f"DSTA mAP {d:.1f} vs image baseline {b:.1f} ({d - b:+.1f}) on synthetic val ({boxes})"
    if d <= b:
        line += ": DSTA did NOT beat the image baseline in this run"
    if split:
        for sub in ("rescuable", "clean"):
            sd, sb = float(split["dsta"][sub]["Total"]), float(split["baseline"][sub]["Total"])
            gap = f"{sd - sb:+.1f}" if math.isfinite(sd - sb) else "nan"
            line += f"; {sub} joints {_f(sd)} vs {_f(sb)} ({gap})"
    return line


_SUBSETS = {"all": "all joints", "rescuable": "rescuable joints", "clean": "clean joints"}


def split_table(runs: dict) -> str:
    """Markdown table: AP (GT boxes) of both models on all / rescuable / clean joints, and the gap."""
    d, b = runs["dsta"]["split"], runs["baseline"]["split"]
    lines = ["| model | " + " | ".join(f"{v} AP" for v in _SUBSETS.values()) + " |", "|---|---|---|---|",
             f"| {runs['dsta']['label']} | " + " | ".join(_f(d[k]["Total"]) for k in _SUBSETS) + " |",
             f"| {runs['baseline']['label']} | " + " | ".join(_f(b[k]["Total"]) for k in _SUBSETS) + " |",
             "| DSTA - baseline | " + " | ".join(f"{d[k]['Total'] - b[k]['Total']:+.1f}" for k in _SUBSETS) + " |",
             "| GT joints | " + " | ".join(str(d[k]["gt_joints"]) for k in _SUBSETS) + " |"]  # fmt: skip
    return "\n".join(lines)


def sweep_line(sweep: dict | None) -> str:
    """This run's gaps beside the multi-seed sweep's (docs/experiments.csv), or why there is none."""
    if not sweep:
        return ("No multi-seed results of this level in docs/experiments.csv yet: a single run's gap cannot be "
                "told apart from seed noise.")  # fmt: skip
    parts = []
    for sub in _SUBSETS:
        g = sweep[sub]
        where = "within" if g["within_spread"] else "OUTSIDE"
        parts.append(f"{_SUBSETS[sub]}: this run {g['run_gap']:+.1f}, sweep {g['sweep_mean']:+.1f} ± "
                     f"{g['sweep_sd']:.1f} ({where} 2 sd)")  # fmt: skip
    return (f"DSTA - baseline against the sweep (docs/experiments.csv, seeds {sweep['seeds']}, mean ± sd of the "
            "per-seed gaps): " + "; ".join(parts))  # fmt: skip


def _smooth(values, window: int) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if len(v) == 0 or window <= 1:
        return v
    window = min(window, len(v))
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    for i in range(len(v)):  # trailing mean (shorter at the start)
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def plot(path, runs: dict) -> None:
    """report.png: per-joint AP (GT boxes) of both models; training loss per step (smoothed); val Total AP
    per epoch."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colors = {"dsta": "tab:blue", "baseline": "tab:orange"}
    split = all("split" in r for r in runs.values())
    ratios = [2.2, 1.0, 1.2, 1.0] if split else [2.2, 1.2, 1.0]
    fig, axes = plt.subplots(1, len(ratios), figsize=(5 * len(ratios) + 2, 5.0), gridspec_kw={"width_ratios": ratios})
    axes = list(axes)
    ax = axes.pop(0)
    joints = list(next(iter(runs.values()))["eval_gt"]["per_joint"])
    x = np.arange(len(joints) + 1)
    width = 0.8 / len(runs)
    for i, (key, r) in enumerate(runs.items()):
        vals = [r["eval_gt"]["per_joint"][j] for j in joints] + [r["eval_gt"]["Total"]]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, np.nan_to_num(vals), width,
               label=f"{r['label']} (mAP {_f(r['eval_gt']['Total'])})", color=colors.get(key))  # fmt: skip
    ax.set_xticks(x, [j.replace("_", " ") for j in joints] + ["Total"], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.set_title("per-joint AP, synthetic val, GT boxes (final weights)", pad=24)
    # above the axes: a legend inside covered the tallest bars
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(runs), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)

    if split:
        ax = axes.pop(0)
        names = ["all", "rescuable", "clean"]
        for i, (key, r) in enumerate(runs.items()):
            vals = [r["split"][n]["Total"] for n in names]
            ax.bar(np.arange(3) + (i - (len(runs) - 1) / 2) * width, np.nan_to_num(vals), width, label=r["label"],
                   color=colors.get(key))  # fmt: skip
        ax.set_xticks(np.arange(3), [f"{n} joints" for n in names], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("Total AP (%)")
        ax.set_title("where the difference comes from", pad=24)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(runs), fontsize=8, frameon=False)
        ax.grid(axis="y", alpha=0.3)

    ax = axes.pop(0)
    for key, r in runs.items():
        losses = r["step_losses"]
        steps = np.arange(1, len(losses) + 1)
        window = max(1, len(losses) // 40)
        ax.plot(steps, losses, color=colors.get(key), alpha=0.15, lw=0.6)
        ax.plot(steps, _smooth(losses, window), color=colors.get(key), lw=1.5,
                label=f"{r['label']} ({window}-step mean)")
    settled = np.concatenate([np.asarray(r["step_losses"][len(r["step_losses"]) // 10 :], np.float64)
                              for r in runs.values()])  # the first steps' loss is huge: show the settled part
    if settled.size and np.isfinite(settled).all():
        lo, hi = np.percentile(settled, 1), np.percentile(settled, 99.5)
        pad = 0.1 * max(hi - lo, 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (RLE)")
    ax.set_title("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes.pop(0)
    for key, r in runs.items():
        ep = [h["epoch"] for h in r["history"] if "Total" in h]
        ap = [h["Total"] for h in r["history"] if "Total" in h]
        ax.plot(ep, ap, "o-", color=colors.get(key), label=r["label"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("val Total AP (%), GT boxes")
    ax.set_title("validation after each epoch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row(name: str, res: dict) -> str:
    return f"| {name} | " + " | ".join(_f(res[k]) for k in COLUMNS) + " |"


def _diff_row(a: dict, b: dict) -> str:
    cells = []
    for k in COLUMNS:
        d = _diff(a[k], b[k])
        cells.append("nan" if not math.isfinite(d) else f"{d:+.1f}")
    return "| DSTA - baseline | " + " | ".join(cells) + " |"


def _table(runs: dict, key: str) -> list[str]:
    d, b = runs["dsta"][key], runs["baseline"][key]
    return ["| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS),
            _row(runs["dsta"]["label"], d), _row(runs["baseline"]["label"], b), _diff_row(d, b)]  # fmt: skip


def write_report(out, *, settings: dict, gen: dict, runs: dict, video: dict, timings: dict, benchmark: dict,
                 stage1: dict, sweep: dict | None = None) -> dict:  # fmt: skip
    """Write OUT/report.md, OUT/report.json and OUT/report.png; return the JSON document.

    `runs[model]["split"]` holds the AP on all / rescuable / clean joints (`protocol.split_ap`),
    `benchmark` the val split's `benchmark_stats.measure`, `stage1` the `protocol.pretrain` record and
    `sweep` the comparison with the multi-seed results (demo.py), or None."""
    from dsta import benchmark_stats  # noqa: PLC0415
    from dsta import utils  # noqa: PLC0415  (utils imports torch: only when a report is written)

    out = Path(out)
    dsta, base = runs["dsta"], runs["baseline"]
    summary = summary_line(dsta["eval_gt"], base["eval_gt"], split={k: r["split"] for k, r in runs.items()})
    against = sweep_line(sweep)
    det_summary = summary_line(dsta["eval_det"], base["eval_det"], boxes="detections")
    plot(out / "report.png", runs)

    models = {}
    for key, r in runs.items():
        cfg = r["cfg"]
        models[key] = {
            "label": r["label"], "model": cfg["model"], "backbone": cfg["backbone"], "frames": cfg["frames"],
            "input_size": cfg["input_size"], "std_mode": cfg["std_mode"] if cfg["model"] == "dsta" else None,
            "params_M": r["params"], "train_clips": r["train_clips"], "steps": r["steps"],
            "train_seconds": round(r["train_s"], 1),
            "eval_gt": {k: v for k, v in r["eval_gt"].items() if k not in ("precision", "recall")},
            "eval_det": {k: v for k, v in r["eval_det"].items() if k not in ("precision", "recall")},
            "split_ap": r["split"],
            "history": r["history"], "step_losses": [round(float(v), 5) for v in r["step_losses"]],
            "checkpoint": f"{key}/last.pt",
        }  # fmt: skip
    dt, bt = float(dsta["eval_gt"]["Total"]), float(base["eval_gt"]["Total"])
    doc = {
        "summary": summary, "summary_detections": det_summary, "sweep_line": against, "sweep": sweep,
        "benchmark": benchmark, "stage1": stage1,
        "dsta_mAP": dt, "baseline_mAP": bt, "difference": dt - bt, "dsta_better": bool(dt > bt),
        "settings": settings, "data": gen, "models": models, "video": video,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "files": {"report_md": "report.md", "report_png": "report.png", "video": video["files"],
                  "predictions": {k: {"gt": f"{k}/eval_gt/predictions", "detections": f"{k}/eval_det/predictions"}
                                  for k in runs}},
    }  # fmt: skip
    utils.atomic_write_text(out / "report.json", json.dumps(utils.jsonable(doc), indent=1))

    s, tr, va = settings, gen["train"], gen["val"]
    c = dsta["cfg"]
    t = c["train"]
    lines = [
        "# DSTA vs the image regression baseline on synthetic videos",
        "",
        f"**{summary}.**",
        "",
        f"With detection boxes: {det_summary}.",
        "",
        ("*--quick run: a few steps on a handful of clips; it checks the pipeline, the numbers mean nothing.*\n"
         if s.get("quick") else ""),
        "## Where the difference comes from (GT boxes, poseval AP %, final weights)",
        "",
        "Rescuable joints are hidden, blurred or defocused in the key frame and clean in a neighbouring frame "
        "(+-1); clean joints are spoiled in no way. Person matching is poseval's, on all joints "
        "(`subset_eval.py`). The all-joints AP is poseval's own, which also counts predictions of joints the GT "
        "does not annotate (outside the image, hidden too long) as false positives, so it can be lower than both.",
        "",
        split_table(runs),
        "",
        against,
        "",
        "## The benchmark (val split, `benchmark_stats.py`)",
        "",
        "```",
        benchmark_stats.format_stats(benchmark),
        "```",
        "",
        "## Results (poseval AP, %, final weights of each model, val split)",
        "",
        "GT person boxes:",
        "",
        *_table(runs, "eval_gt"),
        "",
        "Detections (`detections_val.json`: GT boxes jittered, misses and false positives; score >= 0.2, no NMS):",
        "",
        *_table(runs, "eval_det"),
        "",
        "![per-joint AP, AP on rescuable / clean joints, training loss and validation AP](report.png)",
        "",
        "Per-epoch validation (Total AP, GT boxes): "
        + "; ".join(f"{r['label']} " + ", ".join(_f(h.get("Total")) for h in r["history"]) for r in runs.values()),
        "",
        "## Settings",
        "",
        f"- Data: `synthetic.generate`, level {s['level']} (difficulty {s['difficulty']}), {s['size'][1]} x "
        f"{s['size'][0]} frames, {s['frames_per_video']} frames per video, every frame labelled. Train: "
        f"{tr['videos']} videos, "
        f"{tr['annotations']} person annotations, {tr['corrupted_frames']} of {tr['frames']} frames corrupted. "
        f"Val: {va['videos']} videos, {va['annotations']} person annotations, {va['corrupted_frames']} of "
        f"{va['frames']} frames corrupted ({', '.join(f'{k} {v}' for k, v in va['corruptions'].items())}).",
        f"- Stage 1 (both models start from it): the `{c['backbone']}` backbone trained as an image regression model "
        f"on {stage1['settings']['videos']} videos of a separate split ({stage1['steps']} steps, {stage1['epochs']} "
        f"epochs, `{stage1['config']}`); "
        + (f"**reused from the cache** `{stage1['backbone']}` (trained {stage1['created']})." if stage1.get("cached")
           else f"trained in this run ({stage1['train_s']:.0f} s)."),
        f"- DSTA: `{c['backbone']}` backbone, input {c['input_size'][0]} x {c['input_size'][1]} (H x W), frames "
        f"{c['frames']}, JFD `{c['jfd']}`, STD `{c['std_mode']}` (depth {c['depth']}, dim {c['dim']}), RLE loss; "
        f"{dsta['params']['total']} M parameters.",
        f"- Image baseline: the same backbone and input, frames {base['cfg']['frames']}, global pooling + linear "
        f"regression head, the same RLE loss; {base['params']['total']} M parameters.",
        f"- Training (identical for both; `{Path(s['config']).name}`): {s['epochs']} epochs, batch {t['batch_size']}, "
        f"AdamW lr {t['lr']} (x{t['gamma']} at epoch(s) {s['milestones']}), weight decay {t['weight_decay']}, "
        f"default augmentation, seed {t['seed']}, heads starting at the crop centre; {dsta['steps']} steps each "
        f"on {dsta['train_clips']} training "
        f"clips (one per annotated person and frame). Evaluated with the final weights (no selection on val).",
        f"- Device: {s['device']}, {s['torch_threads']} torch threads.",
        "",
        "## Timings",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k.removesuffix('_s').replace('_', ' ')} | {v:.1f} |" for k, v in timings.items()],
        "",
        "## Files",
        "",
        f"- Video of DSTA's predictions on val sequence `{video['sequence']}` ({video['frames']} frames, GT boxes, "
        f"frames upscaled x{video.get('upscale', 1)} for display; the val sequence with the most corrupted frames): "
        + (", ".join(f"[{f}]({f})" for f in video["files"]) or "none written")
        + ", [video/keypoints.json](video/keypoints.json)",
        "- [report.json](report.json): everything above, per-joint APs, per-step losses, per-epoch metrics",
        *[f"- {r['label']}: [{k}/last.pt]({k}/last.pt), [{k}/metrics.csv]({k}/metrics.csv), predictions "
          f"[{k}/eval_gt/predictions]({k}/eval_gt/predictions) and [{k}/eval_det/predictions]({k}/eval_det/predictions)"
          for k, r in runs.items()],
        "- Data: [data/](data) (images, annotations, detections_val.json)",
        "",
    ]  # fmt: skip
    if video["files"] and video["files"][0].endswith(".gif"):
        lines += [f"![DSTA predictions]({video['files'][0]})", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return doc
