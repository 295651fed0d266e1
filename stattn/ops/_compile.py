"""What stattn needs from torch.compile / torch.export, without importing them at ``import stattn``."""
import sys

import torch


def constant_result(fn):
    """Mark ``fn`` as returning a constant under ``torch.compile`` (Dynamo calls it once, eagerly).

    This is what ``torch.compiler.assume_constant_result`` does, minus its ``import torch._dynamo``,
    which costs about a second and imports Triton: too much for ``import stattn``. The compile tests
    (fullgraph) fail loudly if a future torch reads a different attribute.
    """
    fn._dynamo_marked_constant = True
    return fn


def exporting() -> bool:
    """True under torch.export / torch.onnx.export: exporters must see plain aten ops, and the registered
    stattn ops are opaque to them, so the functionals then inline the reference math instead."""
    if torch.compiler.is_exporting():
        return True
    onnx = sys.modules.get("torch.onnx")  # an ONNX export has imported it; never import it just to ask
    return bool(onnx is not None and onnx.is_in_onnx_export())


def eager_inference(*tensors: torch.Tensor) -> bool:
    """True when a registered op would add nothing to a call: eager (not traced by Dynamo), no autograd
    graph to record, plain tensors and no dispatch mode (fake tensors, proxies, functionalisation).

    Then the functionals call the chosen implementation directly: at B = 1 the ``torch.library``
    dispatcher costs several times the arithmetic.
    """
    if torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(type(t) is torch.Tensor for t in tensors) and not torch._C._len_torch_dispatch_stack()
