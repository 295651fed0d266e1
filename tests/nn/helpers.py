"""Helpers shared by the layer tests."""
import torch


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with N(0, 0.5^2): zero-initialised embeddings and the like then matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return module
