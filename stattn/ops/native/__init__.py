"""Native CPU forward kernels (``kernels.c``), compiled on first use with the system C compiler.

Why: on a CPU the reference spends its time in ~20 full passes over memory (one per key position and
step), where one pass per sequence would do. A tiny C kernel does the whole softmax per sequence in
cache. It is compiled once per (heads, head dim), the way Triton specialises a kernel on constexprs,
into ``$STATTN_CACHE_DIR`` (default ``~/.cache/stattn``), atomically, and loaded with ctypes (calls
release the GIL). Built with ``-fopenmp``, the kernel binds to the OpenMP runtime torch already loaded
(same soname), so its loops run on torch's threads and honour ``torch.set_num_threads``; a compiler
without OpenMP, or whose OpenMP build cannot load next to torch's runtime, gets a serial build. The
build happens while the dispatcher decides (``BACKEND.reasons``), so no compiler, or a failed build,
is a refusal reason like any other: an automatic call goes to the next backend, a call that asked
for ``backend="native"`` raises it, and ``python -m stattn.info`` prints it. A chosen native call
never runs something else.

The same library holds the whole pre-norm block (``local_block``), so that at B = 1 a block is one C
call instead of ~10 PyTorch calls. Forward only, float32 only: the attention backward is the
reference's closed form, and the block's gradients recompute its reference.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from .._backend import Backend
from .._compile import constant_result

_SOURCE = Path(__file__).with_name("kernels.c")
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"]
MAX_CHANNELS = 4096  # H * D; scratch is malloc'ed, this only bounds the per-sequence buffers
_LOCK = threading.Lock()
_LIBS: dict[tuple[int, int], ctypes.CDLL | None] = {}
_ERRORS: dict[tuple[int, int], str] = {}
_I64 = ctypes.c_int64
_P = ctypes.c_void_p


@constant_result
def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc`` or ``gcc`` on PATH (looked up once)."""
    if "cc" not in _COMPILER:
        cc = os.environ.get("CC")
        _COMPILER["cc"] = (shutil.which(cc) or None) if cc else (shutil.which("cc") or shutil.which("gcc"))
    return _COMPILER["cc"]


_COMPILER: dict[str, str | None] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("STATTN_CACHE_DIR", Path.home() / ".cache" / "stattn")) / "native"


def _machine_tag() -> str:
    """Binaries built with -march=native only run on the CPU they were built for."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return platform.machine() + platform.system() + flags


def _compile(cc: str, flags: list[str], target: Path) -> None:
    """Compile to a temp file next to ``target``, then rename: concurrent processes never load a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, str(_SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE.name} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build(heads: int, head_dim: int) -> ctypes.CDLL:
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc/clang)")
    defines = [f"-DNUM_HEADS={heads}", f"-DHEAD_DIM={head_dim}"]
    key = hashlib.sha256(
        _SOURCE.read_bytes() + " ".join([cc, *_FLAGS, *defines, _machine_tag()]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"stattn_h{heads}_d{head_dim}_{key}.so"
    if not target.exists():
        try:
            _compile(cc, [*_FLAGS, "-fopenmp", *defines], target)
        except RuntimeError:  # e.g. Apple clang has no OpenMP: a serial kernel is still far faster
            _compile(cc, [*_FLAGS, *defines], target)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError:  # e.g. a clang whose -fopenmp needs libomp's symbols, which torch's libgomp lacks
        serial = target.with_name(f"{target.stem}_serial.so")
        if not serial.exists():
            _compile(cc, [*_FLAGS, *defines], serial)
        lib = ctypes.CDLL(str(serial))
    lib.stattn_temporal_fwd.argtypes = [_P, _P, _P, _P, _I64, _I64, _I64, _P, _P, _P, _P, _I64, _P, ctypes.c_float]
    lib.stattn_grouped_fwd.argtypes = [_P, _P, _P, _P, _I64, _I64, _I64, _P, _P, _P, _P, _P, _P, _I64, _I64,
                                       ctypes.c_float]  # fmt: skip
    lib.stattn_block_fwd.argtypes = [_P, _P, _I64, _I64, _I64, _I64, _P, ctypes.c_float, ctypes.c_float,
                                     ctypes.c_float, _I64, _P, _P, _P, _P, _P, _I64, _I64]  # fmt: skip
    lib.stattn_temporal_fwd.restype = lib.stattn_grouped_fwd.restype = lib.stattn_block_fwd.restype = ctypes.c_int
    return lib


def _library(heads: int, head_dim: int) -> ctypes.CDLL | None:
    key = (heads, head_dim)
    if key not in _LIBS:
        with _LOCK:
            if key not in _LIBS:
                try:
                    _LIBS[key] = _build(heads, head_dim)
                except Exception as exc:  # noqa: BLE001 - any failure is a refusal reason (build_error)
                    _ERRORS[key] = f"{type(exc).__name__}: {exc}"
                    _LIBS[key] = None
    return _LIBS[key]


@constant_result
def build_error(heads: int, head_dim: int) -> str | None:
    """Why the kernel for (heads, head dim) cannot be loaded here, or None once it is (built once, cached)."""
    if compiler() is None:
        return "no C compiler found (set CC, or install gcc/clang)"
    if _library(heads, head_dim) is None:
        return f"the kernel for H={heads}, D={head_dim} failed to build: {_ERRORS[(heads, head_dim)]}"
    return None


class _NativeBackend(Backend):
    """C forward kernels for float32 CPU tensors; the backward is the reference's closed form."""

    name = "native"
    ops = frozenset({"temporal_attention", "grouped_attention", "local_block"})

    def refusals(self, op, q, *inputs, automatic=False, **meta):
        out = []
        if q.device.type != "cpu":
            out.append(f"tensors are on {q.device.type}, the native backend is CPU-only")
        if q.dtype != torch.float32:
            out.append(f"dtype {q.dtype} is not float32")
        if op == "local_block":  # q is the block's input x [..., C]; the op has checked C % num_heads
            heads = meta["num_heads"]
            head_dim = q.shape[-1] // heads
        else:
            heads, head_dim = q.shape[-2], q.shape[-1]
        if heads * head_dim > MAX_CHANNELS:
            out.append(f"H * D = {heads * head_dim} > {MAX_CHANNELS}")
        if not out or compiler() is None:  # build only for a call it could run: the failure is then a reason
            err = build_error(heads, head_dim)
            if err:
                out.append(err)
        return out

    def _table(self):
        from ..reference import grouped_attention_backward_reference, temporal_attention_backward_reference

        return {
            "temporal_attention": (temporal_attention_fwd, temporal_attention_backward_reference),
            "grouped_attention": (grouped_attention_fwd, grouped_attention_backward_reference),
            "local_block": (local_block_fwd, None),  # the op recomputes its reference for gradients
        }


BACKEND = _NativeBackend()


def reasons(q: torch.Tensor) -> list[str]:
    """Every reason the native backend cannot run an attention call with tensors like ``q`` `[B, F, N, H, D]`."""
    return BACKEND.reasons("temporal_attention", q)


def _operand(t: torch.Tensor) -> tuple[torch.Tensor, ctypes.Array]:
    """``t`` with a token's H * D channels contiguous (packed qkv views already are: no copy), and its
    element strides of dims (B, F, N) as a C array."""
    H, D = t.shape[-2:]
    stride = t.stride()
    if not ((stride[4] == 1 or D == 1) and (stride[3] == D or H == 1)):
        t = t.contiguous()
        stride = t.stride()
    return t, _c_strides(stride[:3])


@functools.lru_cache(maxsize=256)
def _c_strides(stride: tuple[int, int, int]) -> ctypes.Array:
    """A C int64[3] (cached: building one costs more than a B = 1 call's arithmetic)."""
    return (ctypes.c_int64 * 3)(*stride)


def _check(code: int) -> None:
    if code:
        raise MemoryError("stattn native kernel could not allocate its scratch buffers")


@functools.lru_cache(maxsize=256)
def _temporal_tables(frames: int, window, causal: bool, query_frames: tuple[int, ...] | None):
    """(query frame indices, their count, allowed [Fq, F] bytes or None, its address): reused across calls."""
    from ..reference import temporal_mask

    rows = list(range(frames)) if query_frames is None else list(query_frames)
    mask = temporal_mask(frames, window, causal)
    allowed = None if mask is None else mask[rows].to(torch.uint8).contiguous()
    return torch.tensor(rows, dtype=torch.int64), len(rows), allowed, None if allowed is None else allowed.data_ptr()


@functools.lru_cache(maxsize=256)
def _group_tables(group_index: tuple[int, ...], group_sizes: tuple[int, ...]):
    """(members, starts, sizes) int64 tensors describing the partition, and the largest size."""
    sizes = torch.tensor(group_sizes, dtype=torch.int64)
    return torch.tensor(group_index, dtype=torch.int64), torch.cumsum(sizes, 0) - sizes, sizes, max(group_sizes)


@functools.lru_cache(maxsize=256)
def _partition_tables(groups: tuple[tuple[int, ...], ...]):
    """`_group_tables` of a block's partition (the op passes the same tuple every call)."""
    return _group_tables(tuple(i for g in groups for i in g), tuple(map(len, groups)))


def _loaded(heads: int, head_dim: int) -> ctypes.CDLL:
    lib = _LIBS.get((heads, head_dim))
    if lib is None:  # the dispatcher builds it before choosing this backend
        why = build_error(heads, head_dim)
        raise RuntimeError(f"stattn native kernel for H={heads}, D={head_dim} is not built: {why}")
    return lib


def temporal_attention_fwd(q, k, v, scale, window, causal, query_frames) -> torch.Tensor:
    """Native forward `[B, Fq, N, H, D]` (the backend's reasons have built the kernel)."""
    B, F, N, H, D = q.shape
    lib = _loaded(H, D)
    (q, sq), (k, sk), (v, sv) = _operand(q), _operand(k), _operand(v)
    qf, fq, _, allowed = _temporal_tables(F, window, causal, None if query_frames is None else tuple(query_frames))
    out = torch.empty(B, fq, N, H, D, dtype=torch.float32, device="cpu")
    _check(lib.stattn_temporal_fwd(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), B, F, N, sq, sk, sv,
                                   qf.data_ptr(), fq, allowed, scale))  # fmt: skip
    return out


def grouped_attention_fwd(q, k, v, group_index, group_sizes, scale) -> torch.Tensor:
    """Native forward `[B, F, N, H, D]` (the backend's reasons have built the kernel)."""
    B, F, N, H, D = q.shape
    lib = _loaded(H, D)
    (q, sq), (k, sk), (v, sv) = _operand(q), _operand(k), _operand(v)
    members, starts, sizes, widest = _group_tables(tuple(group_index), tuple(group_sizes))
    out = torch.empty(B, F, N, H, D, dtype=torch.float32, device="cpu")
    _check(lib.stattn_grouped_fwd(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), B, F, N, sq, sk, sv,
                                  members.data_ptr(), starts.data_ptr(), sizes.data_ptr(), len(group_sizes), widest,
                                  scale))  # fmt: skip
    return out


def local_block_fwd(x, weights, kind, window, causal, groups, num_heads, eps) -> torch.Tensor:
    """Native whole-block forward on `[B, F, N, C]` (or `[B, N, C]`, grouped), float32 (the op has checked
    the weights against x; the backend's reasons have built the kernel)."""
    C = x.shape[-1]
    lib = _loaded(num_heads, C // num_heads)
    x = x.contiguous()
    B, F, N = (x.shape[0], 1, x.shape[1]) if x.dim() == 3 else x.shape[:3]
    weights = [None if t is None else t.contiguous() for t in weights]  # held until the call returns
    ptrs = (ctypes.c_void_p * 12)(*(None if t is None else t.data_ptr() for t in weights))
    if kind == "temporal":
        qf, _, _, allowed = _temporal_tables(F, window, causal, None)
        tables = (0, qf.data_ptr(), allowed, None, None, None, 0, 0)
    else:
        members, starts, sizes, widest = _partition_tables(groups)
        tables = (1, None, None, members.data_ptr(), starts.data_ptr(), sizes.data_ptr(), len(groups), widest)
    y = torch.empty_like(x)
    _check(lib.stattn_block_fwd(x.data_ptr(), y.data_ptr(), B, F, N, weights[8].shape[0], ptrs, eps[0], eps[1],
                                (C // num_heads) ** -0.5, *tables))  # fmt: skip
    return y
