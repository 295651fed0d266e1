"""examples/dsta/export.py: ONNX export (stattn inlines its reference math), checked with onnxruntime.

Tolerance: ONNX Runtime and PyTorch run the same float32 graph with different kernels (convolution
algorithms, GEMM blocking, reduction order), so outputs differ by rounding only: about 1e-6 here for
outputs in [0, 1] (measured: <= 1e-6 for the tiny, ResNet, HRNet and ViT backbones). 1e-4 leaves two
orders of magnitude for other CPUs / thread counts, while a real export error (a wrong group table or
window, a baked-in batch size, a train-mode layer) moves the outputs by 1e-2 or more.
"""
from pathlib import Path

from dsta import export
from dsta.pipeline import load_model
import numpy as np
import pytest
import stattn
import stattn.ops
import torch

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "dsta" / "configs" / "cpu_tiny.yaml"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    model, _, _ = load_model(config=CONFIG, seed=0)
    return model


@pytest.mark.parametrize("sets", [[], ["model=image_baseline", "frames=[0]"],
                                  ["frames=[-2,-1,0,1,2]", "aggregation=concat", "std_mode=decoupled"]])  # fmt: skip
def test_export_matches_pytorch(sets, tmp_path, capsys):
    pytest.importorskip("onnx")  # the exporter writes through it
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    argv = ["--config", str(CONFIG), "--out", str(out), "--check", "--tolerance", str(TOL)]
    result = export.main(argv + (["--set", *sets] if sets else []))
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "check passed" in printed
    assert set(result["diffs"]) == {"coords", "sigma", "score"}
    assert max(result["diffs"].values()) <= TOL  # batches 1 and 3 against an export traced at batch 2


def test_onnx_graph_and_metadata(tiny, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = export.export_onnx(tiny, tmp_path / "tiny.onnx", opset=17, metadata={"weights": "random"})
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)  # standard operators only
    assert "LayerNormalization" in ops and "Softmax" in ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["frames"] == "-1,0,1" and meta["input_size"] == "64,48" and meta["weights"] == "random"
    assert meta["joints"].split(",") == list(stattn.POSETRACK.joints)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "frames" and inp.shape[1:] == [3, 3, 64, 48] and isinstance(inp.shape[0], str)
    assert [o.name for o in sess.get_outputs()] == ["coords", "sigma", "score"]
    x = export.example_input(tiny, 5, seed=3)
    coords, sigma, score = sess.run(None, {"frames": x.numpy()})
    with torch.no_grad():
        ref = tiny(x)
    assert coords.shape == (5, 17, 2) and sigma.shape == (5, 17, 2) and score.shape == (5, 17, 1)
    np.testing.assert_allclose(coords, ref.coords.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(score, ref.score.numpy(), rtol=0, atol=TOL)
    assert tiny.training is False  # the export left the model in eval mode


def test_export_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export.main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_export_help_and_device(tmp_path, capsys):
    """Every option has help and a shown default; an unavailable device is one sentence (exit code 2)."""
    with pytest.raises(SystemExit):
        export.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--opset", "--tolerance", "--device", "--set"):
        assert flag in text
    assert "(default: 17)" in text and "(default: auto)" in text
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exc:
            export.main(["--config", str(CONFIG), "--out", str(tmp_path / "m.onnx"), "--device", "cuda"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "no CUDA device" in err and "Traceback" not in err
