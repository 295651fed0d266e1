"""Export a DSTA model to ONNX through stattn's pure-PyTorch reference attention, and check it.

    python examples/dsta/export.py --checkpoint runs/r50_3f/best.pt --out dsta.onnx --check
    python examples/dsta/export.py --config examples/dsta/configs/cpu_tiny.yaml --out tiny.onnx --check

The graph takes `frames` `[batch, T, 3, H, W]` (ImageNet-normalised RGB crops, T = len(frames) of the
config, in offset order; batch is a dynamic axis) and returns `coords` `[batch, 17, 2]` (in [0, 1] of the
crop), `sigma` `[batch, 17, 2]` and `score` `[batch, 17, 1]`, exactly `model(frames)`. The RLE flow is
training-only and not exported. The model's frame offsets, input size and joint names are stored in the
ONNX metadata (`metadata_props`).

How: under `torch.onnx.export` stattn's functionals inline their pure-PyTorch reference math instead
of the registered custom ops (which no ONNX exporter can translate), so the graph holds only standard
ONNX operators (MatMul, Softmax, Gather, ...). The export uses the TorchScript exporter (`dynamo=False`;
the dynamo exporter needs the onnxscript package). `--check` runs onnxruntime on random inputs (batch 1
and 3, traced at 2) and compares with the PyTorch model run normally (default backend).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import stattn
import torch
from dsta.cli import HelpFormatter, add_device_argument
from dsta.pipeline import InferenceError, load_model
from torch import nn

__all__ = ["OnnxWrapper", "export_onnx", "check_onnx", "main",
           "OUTPUT_NAMES", "DEFAULT_TOLERANCE"]  # fmt: skip

OUTPUT_NAMES = ("coords", "sigma", "score")
#: --check passes when every output differs from PyTorch by at most this (absolute). All outputs live in
#: [0, 1] (coords in crop units: 1e-3 is 0.26 px of a 256-px crop); ONNX Runtime and PyTorch run the
#: same fp32 math with different kernels (summation order, conv algorithms), ~1e-6 per op.
DEFAULT_TOLERANCE = 1e-3


class OnnxWrapper(nn.Module):
    """`frames` `[B, T, 3, H, W]` -> (coords, sigma, score): the model's RegressionOutput as a plain tuple."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor):
        out = self.model(frames)
        return out.coords, out.sigma, out.score


def example_input(model: nn.Module, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Random `[batch, T, 3, H, W]` (like ImageNet-normalised crops) for the model's T and input size."""
    h, w = model.input_size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, len(model.frames), 3, h, w, generator=g)


def export_onnx(model: nn.Module, path, *, opset: int = 17, batch: int = 2, metadata: dict | None = None) -> Path:
    """Export `model` (DSTA or the image baseline, on CPU) to `path`; returns the path.

    Args:
        model: has `frames`, `input_size` and forward `[B, T, 3, H, W]` -> RegressionOutput.
        opset: ONNX opset (>= 17: LayerNormalization is one operator).
        batch: batch size of the traced example (the batch axis is dynamic).
        metadata: extra string key/values for the ONNX metadata.

    Raises:
        ImportError: without the onnx package (the exporter writes through it).
    """
    try:
        import onnx  # noqa: F401, PLC0415
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install onnx") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = OnnxWrapper(model.cpu()).eval()  # eval on the wrapper: export restores *its* mode afterwards
    x = example_input(model, batch)
    dynamic = {name: {0: "batch"} for name in ("frames", *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # the model's shape checks (`if x.shape[1] != ...`) are constant for a given T / size: harmless
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            torch.onnx.export(wrapper, (x,), str(path), dynamo=False, opset_version=opset, input_names=["frames"],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic)  # fmt: skip
        except Exception as exc:
            if "stattn" in str(exc):
                raise RuntimeError(f"ONNX export met a stattn custom op; stattn's functionals should inline "
                                   f"their reference math under torch.onnx.export: {exc}") from exc  # fmt: skip
            raise
    meta = {"frames": ",".join(str(f) for f in model.frames), "input_size": ",".join(str(s) for s in model.input_size),
            "joints": ",".join(model.skeleton.joints), "outputs": "coords in [0,1] of the crop; sigma; score",
            "stattn_version": stattn.__version__, **(metadata or {})}  # fmt: skip
    _add_metadata(path, meta)
    return path


def _add_metadata(path: Path, meta: dict) -> None:
    """Write `meta` into the model's metadata_props and check the model.

    A model over protobuf's 2 GB limit (ViT-H) comes from the exporter with one external file per
    weight next to it; it is rewritten with all weights in one `<name>.onnx.data` file."""
    import onnx  # noqa: PLC0415

    proto = onnx.load(str(path), load_external_data=False)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    old_files = {e.value for t in external for e in t.external_data if e.key == "location"}
    if external:
        proto = onnx.load(str(path))  # with the weights
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    if external:
        data = f"{path.name}.data"
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data)
        for name in old_files - {data}:
            (path.parent / name).unlink(missing_ok=True)
    else:
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def _size_text(path: Path) -> str:
    data = path.with_name(f"{path.name}.data")
    if data.is_file():
        return f"{path.stat().st_size / 1e6:.1f} MB + weights {data.name} {data.stat().st_size / 1e9:.2f} GB"
    return f"{path.stat().st_size / 1e6:.1f} MB"


def check_onnx(model: nn.Module, path, batches=(1, 3), seed: int = 1, device="cpu") -> dict:
    """Run the ONNX file with onnxruntime on random inputs and compare with `model` in PyTorch (on `device`).

    Returns:
        {output name: max abs difference over `batches`}. Raises ImportError without onnxruntime.
    """
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.to(device).eval()
    diffs = dict.fromkeys(OUTPUT_NAMES, 0.0)
    for i, b in enumerate(batches):
        x = example_input(model, b, seed + i)
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full fp32 on CUDA too
            ref = [t.float().cpu() for t in model(x.to(device))]
        outs = session.run(list(OUTPUT_NAMES), {"frames": x.numpy()})
        for name, r, o in zip(OUTPUT_NAMES, ref, outs):
            if o.shape != tuple(r.shape):
                raise AssertionError(f"{name}: onnxruntime shape {o.shape} != PyTorch {tuple(r.shape)} (batch {b})")
            diffs[name] = max(diffs[name], float(np.abs(o - r.numpy()).max()))
    return diffs


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Export DSTA to ONNX (reference attention), optionally check it.",
                                formatter_class=HelpFormatter)  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="last.pt / best.pt written by train.py")
    src.add_argument("--config", help="YAML config: random weights")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch on random inputs")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="--check fails above this max abs difference")  # fmt: skip
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    add_device_argument(p)
    args = p.parse_args(argv)
    try:  # the export traces on the CPU; --device is where --check runs the PyTorch side
        model, cfg, _ = load_model(args.checkpoint, "cpu", args.set, config=args.config)
    except InferenceError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    weights = args.checkpoint or f"random ({args.config})"
    try:
        path = export_onnx(model, args.out, opset=args.opset, metadata={"weights": weights, "name": cfg.get("name")})
    except ImportError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    print(f"wrote {path} ({_size_text(path)}): frames [batch, {len(model.frames)}, 3, "
          f"{model.input_size[0]}, {model.input_size[1]}] -> coords, sigma, score; opset {args.opset}")  # fmt: skip
    result = {"path": path}
    if args.check:
        try:
            diffs = check_onnx(model, path, device=args.device)
        except ImportError:
            p.exit(2, f"{p.prog}: error: --check needs onnxruntime (pip install onnxruntime)\n")
        worst = max(diffs.values())
        print("onnxruntime vs PyTorch, max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
        result["diffs"] = diffs
        if not worst <= args.tolerance:
            print(f"check FAILED: {worst:.2e} > tolerance {args.tolerance:.0e}", file=sys.stderr)
            raise SystemExit(1)
        print(f"check passed (tolerance {args.tolerance:.0e})")
    return result


if __name__ == "__main__":
    main()
