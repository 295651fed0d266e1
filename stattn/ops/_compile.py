"""What stattn needs from torch.compile, without importing it at ``import stattn`` time."""


def constant_result(fn):
    """Mark ``fn`` as returning a constant under ``torch.compile`` (Dynamo calls it once, eagerly).

    This is what ``torch.compiler.assume_constant_result`` does, minus its ``import torch._dynamo``,
    which costs about a second and imports Triton: too much for ``import stattn``. The compile tests
    (fullgraph) fail loudly if a future torch reads a different attribute.
    """
    fn._dynamo_marked_constant = True
    return fn
