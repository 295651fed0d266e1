"""The providers bench_attention.py compares: every way to compute one local-attention case.

A provider's ``build(case)`` returns ``fwd(q, k, v) -> out`` or raises :class:`NotAvailable` with the
reason. ``q, k, v`` are the op's inputs (temporal: `[B, F, N, H, D]`; grouped on the key frame:
`[B, N, H, D]`; grouped on all frames: `[B, F, N, H, D]`), strided views of one packed
`[B, F, N, 3, H, D]` projection as a qkv Linear produces them; ``out`` has the op's logical shape (a
view is fine: no provider is charged for a final copy it would not need). Providers with
``clip_inputs`` (global attention) take the whole clip `[B, F, N, H, D]` instead, whatever the op.

Dense providers include their layout copies in the time: the permutes into `[B*N, H, F, D]` (temporal)
or `[B*K, H, g, D]` (groups of equal size g gathered together; singletons pass their value through)
are what a user of SDPA/FlexAttention/xformers has to write around stattn's layout.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

import stattn
from stattn.ops.reference import grouped_attention_reference, temporal_attention_reference

SKELETON = stattn.POSETRACK


class NotAvailable(Exception):
    """The provider cannot run this case; the message is the reason recorded in the n/a row."""


@dataclass(frozen=True)
class Case:
    op: str  # "temporal" | "grouped"
    mode: str  # "fwd" | "bwd" | "fwdbwd"
    B: int
    F: int
    H: int
    D: int
    dtype: str
    device: torch.device
    grouped_frames: str = "key"  # grouped attention on the key frame only (DSTA's SD) or on all frames
    allow_interpreter: bool = False
    N: int = field(default=SKELETON.num_joints)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def key(self) -> int:
        return self.F // 2

    @property
    def tokens(self) -> int:
        """Query tokens of the op (the rows of q, k, v, o that it reads or writes)."""
        if self.op == "grouped" and self.grouped_frames == "key":
            return self.B * self.N
        return self.B * self.F * self.N

    def select(self, t: torch.Tensor) -> torch.Tensor:
        """Op inputs from a clip tensor `[B, F, N, H, D]` (a view)."""
        return t[:, self.key] if self.op == "grouped" and self.grouped_frames == "key" else t


@dataclass(frozen=True)
class Provider:
    name: str
    help: str
    build: Callable[[Case], Callable]
    clip_inputs: bool = False  # takes the whole clip (global attention), not the op's inputs
    computes_op: bool = True  # its output is the op's (checked against the float64 reference)
    note: Callable[[Case], str] = lambda case: ""


# ----------------------------------------------------------------------------------------- layouts


def _temporal_dense(q, k, v, attend):
    """`[B, F, N, H, D]` -> sequences `[B*N, H, F, D]` (copies) -> attend -> `[B, F, N, H, D]` view."""
    B, Fr, N, H, D = q.shape
    seq = lambda t: t.permute(0, 2, 3, 1, 4).reshape(B * N, H, Fr, D)  # noqa: E731
    out = attend(seq(q), seq(k), seq(v))
    return out.reshape(B, N, H, Fr, D).permute(0, 3, 1, 2, 4)  # reshape: fused SDPA outputs may be strided


@functools.lru_cache(maxsize=32)
def _group_buckets(device: str):
    """[(size, member index, group-major)], and the inverse permutation of their concatenation."""
    buckets, order = [], []
    for size in sorted(set(SKELETON.group_sizes)):
        members = [i for g in SKELETON.groups if len(g) == size for i in g]
        buckets.append((size, torch.tensor(members, device=device)))
        order += members
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return buckets, inverse.to(device)


def _grouped_dense(q, k, v, attend):
    """Groups of equal size gathered into `[B*K, H, g, D]`, attended, concatenated, un-permuted."""
    frames = q.dim() == 5
    if frames:
        B, Fr = q.shape[:2]
        q, k, v = (t.reshape(B * Fr, *t.shape[2:]) for t in (q, k, v))
    Bf, N, H, D = q.shape
    buckets, inverse = _group_buckets(str(q.device))
    pieces = []
    for size, idx in buckets:
        if size == 1:  # softmax over one key is 1: the output is the value
            pieces.append(v.index_select(1, idx))
            continue
        K = idx.numel() // size
        def seq(t):  # [Bf, N, H, D] -> the K groups of this size as sequences [Bf*K, H, size, D]
            return t.index_select(1, idx).view(Bf, K, size, H, D).transpose(2, 3).reshape(Bf * K, H, size, D)

        out = attend(seq(q), seq(k), seq(v))
        pieces.append(out.reshape(Bf, K, H, size, D).transpose(2, 3).reshape(Bf, K * size, H, D))
    out = torch.cat(pieces, dim=1).index_select(1, inverse)
    return out.view(B, Fr, N, H, D) if frames else out


def _dense(case: Case, attend) -> Callable:
    if case.op == "temporal":
        return lambda q, k, v: _temporal_dense(q, k, v, attend)
    return lambda q, k, v: _grouped_dense(q, k, v, attend)


def _official_math(q, k, v):
    """The official DSTA attention: scores by matmul, softmax, matmul (timm style)."""
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return attn.softmax(dim=-1) @ v


# --------------------------------------------------------------------------------------- providers


def _stattn(backend: str) -> Callable[[Case], Callable]:
    def build(case: Case):
        if backend == "triton" and case.device.type != "cuda" and not case.allow_interpreter:
            raise NotAvailable("CUDA only; the interpreter is for correctness (--allow-interpreter to run it)")
        if backend == "native" and case.device.type != "cpu":
            raise NotAvailable("CPU only (the native backend is C kernels for CPU float32)")
        if case.op == "temporal":
            return lambda q, k, v: stattn.temporal_attention(q, k, v, backend=backend)
        return lambda q, k, v: stattn.grouped_attention(q, k, v, SKELETON, backend=backend)

    return build


@functools.lru_cache(maxsize=None)
def _compiled(fn):
    """One compiled wrapper per function, specialised per shape: without ``dynamic=False`` a sweep's
    second shape triggers automatic-dynamic recompiles (slower code; Flex's CPU template fails on them)."""
    return torch.compile(fn, dynamic=False)


def _reference_compiled(case: Case):
    if case.op == "temporal":
        compiled = _compiled(temporal_attention_reference)
        return lambda q, k, v: compiled(q, k, v)
    compiled = _compiled(grouped_attention_reference)
    index, sizes = SKELETON.group_index, SKELETON.group_sizes
    if case.grouped_frames == "key":
        return lambda q, k, v: compiled(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), index, sizes).squeeze(1)
    return lambda q, k, v: compiled(q, k, v, index, sizes)


_SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH",
                  "cudnn": "CUDNN_ATTENTION"}  # fmt: skip


def _sdpa(pinned: str | None) -> Callable[[Case], Callable]:
    def build(case: Case):
        if pinned is None:
            return _dense(case, F.scaled_dot_product_attention)
        if case.device.type != "cuda":
            raise NotAvailable("CUDA only (pinned SDPA backends are compared on CUDA)")
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, _SDPA_BACKENDS[pinned])

        def attend(q, k, v):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v)

        return _dense(case, attend)

    return build


def _sdpa_global(case: Case):
    def fwd(q, k, v):  # the whole clip: [B, H, F*N, D] views, no mask (the paper's coupled baseline)
        B, Fr, N, H, D = q.shape
        seq = lambda t: t.reshape(B, Fr * N, H, D).transpose(1, 2)  # noqa: E731
        return F.scaled_dot_product_attention(seq(q), seq(k), seq(v)).transpose(1, 2).unflatten(1, (Fr, N))

    return fwd


@functools.lru_cache(maxsize=64)
def _flex_block_mask(op: str, frames: int, tokens: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    if op == "temporal":  # per clip, tokens frame-major (f * N + n): same joint n in any frame

        def mask_mod(b, h, q_idx, kv_idx):
            return (q_idx % tokens) == (kv_idx % tokens)

        length = frames * tokens
    else:  # per frame: same group
        group_of = SKELETON.group_of().to(device)

        def mask_mod(b, h, q_idx, kv_idx):
            return group_of[q_idx] == group_of[kv_idx]

        length = tokens
    return create_block_mask(mask_mod, None, None, length, length, device=device)


def _flex(case: Case):
    if case.device.type == "cuda" and case.D < 16:
        raise NotAvailable(f"head dim < 16 (D={case.D}; FlexAttention's CUDA kernels need D >= 16)")
    if case.device.type == "cpu" and case.mode != "fwd":
        raise NotAvailable("backward not supported (FlexAttention has no CPU backward)")
    from torch.nn.attention.flex_attention import flex_attention

    flex = _compiled(flex_attention)
    mask = _flex_block_mask(case.op, case.F, case.N, str(case.device))

    def fwd(q, k, v):
        if case.op == "temporal":  # [B, H, F*N, D] views
            B, Fr, N, H, D = q.shape
            seq = lambda t: t.reshape(B, Fr * N, H, D).transpose(1, 2)  # noqa: E731
            return flex(seq(q), seq(k), seq(v), block_mask=mask).transpose(1, 2).unflatten(1, (Fr, N))
        shape = q.shape
        seq = lambda t: t.reshape(-1, *shape[-3:]).transpose(1, 2)  # noqa: E731  [B(*F), H, N, D]
        return flex(seq(q), seq(k), seq(v), block_mask=mask).transpose(1, 2).reshape(shape)

    return fwd


def _xformers(case: Case):
    if importlib.util.find_spec("xformers") is None:
        raise NotAvailable("xformers not installed")
    if case.device.type != "cuda":
        raise NotAvailable("CUDA only (xformers has no CPU kernels)")
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    def bias(seqlens):
        try:
            return BlockDiagonalMask.from_seqlens(seqlens, device=case.device)
        except TypeError:  # older releases: no device keyword
            return BlockDiagonalMask.from_seqlens(seqlens)

    if case.op == "temporal":  # one packed sequence per (clip, joint): [1, B*N*F, H, D]
        mask = bias([case.F] * (case.B * case.N))

        def fwd(q, k, v):
            B, Fr, N, H, D = q.shape
            seq = lambda t: t.transpose(1, 2).reshape(1, B * N * Fr, H, D)  # noqa: E731
            out = xops.memory_efficient_attention(seq(q), seq(k), seq(v), attn_bias=mask)
            return out.reshape(B, N, Fr, H, D).transpose(1, 2)

        return fwd
    order = torch.tensor(SKELETON.group_index, device=case.device)
    inverse = torch.argsort(order)
    frames = case.B * (case.F if case.grouped_frames == "all" else 1)
    mask = bias(list(SKELETON.group_sizes) * frames)

    def fwd(q, k, v):  # tokens sorted by group, one packed sequence per group: [1, B*N, H, D]
        shape = q.shape
        seq = lambda t: t.reshape(-1, *shape[-3:]).index_select(1, order).reshape(1, -1, *shape[-2:])  # noqa: E731
        out = xops.memory_efficient_attention(seq(q), seq(k), seq(v), attn_bias=mask)
        return out.reshape(-1, *shape[-3:]).index_select(1, inverse).view(shape)

    return fwd


def _native_note(case: Case) -> str:
    return "backward: the reference's closed form" if case.mode != "fwd" else ""


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in [
        Provider("stattn-triton", "stattn, backend='triton' (fused Triton kernels; CUDA)", _stattn("triton")),
        Provider("stattn-native", "stattn, backend='native' (C forward kernels, CPU float32; backward = reference)",
                 _stattn("native"), note=_native_note),
        Provider("stattn-reference", "stattn, backend='reference' (pure PyTorch, no permutes)", _stattn("reference")),
        Provider("reference-compiled", "torch.compile of stattn's reference functional", _reference_compiled),
        Provider("eager-official", "official DSTA math: dense reshape, (q @ k^T) * scale, softmax, @ v",
                 lambda case: _dense(case, _official_math)),
        Provider("sdpa", "F.scaled_dot_product_attention on the reshaped dense batch, default dispatch", _sdpa(None)),
        Provider("sdpa-flash", "same, pinned to FLASH_ATTENTION (CUDA)", _sdpa("flash")),
        Provider("sdpa-efficient", "same, pinned to EFFICIENT_ATTENTION (CUDA)", _sdpa("efficient")),
        Provider("sdpa-math", "same, pinned to MATH (CUDA)", _sdpa("math")),
        Provider("sdpa-cudnn", "same, pinned to CUDNN_ATTENTION (CUDA)", _sdpa("cudnn")),
        Provider("sdpa-global", "SDPA over all F*N tokens of each clip, no mask (the paper's coupled baseline)",
                 _sdpa_global, clip_inputs=True, computes_op=False),
        Provider("flex-compiled", "torch.compile(flex_attention), per-clip layout, cached block mask",
                 _flex),
        Provider("xformers", "xformers memory_efficient_attention with a BlockDiagonalMask (CUDA)", _xformers),
    ]
}

#: providers a plain run uses on each device (compiled ones cost ~5-15 s of compile per case on CPU)
DEFAULT_CPU = ["stattn-triton", "stattn-native", "stattn-reference", "reference-compiled", "eager-official",
               "sdpa", "sdpa-global", "flex-compiled", "xformers"]  # fmt: skip
#: --quick (smoke tests): no compiled providers, but some that give n/a rows on CPU
QUICK = ["stattn-triton", "stattn-native", "stattn-reference", "eager-official", "sdpa", "sdpa-cudnn",
         "sdpa-global", "xformers"]  # fmt: skip
DEFAULT_CUDA = list(PROVIDERS)

