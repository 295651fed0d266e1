"""Build real GPU binaries of the fused block kernel without a GPU (Triton's bundled ptxas).

The CPU interpreter does not enforce GPU compile rules (tl.dot sizes, layouts, register limits), so
the tests and ``python -m stattn.ops.triton._compile_check`` compile the block kernel for sm_90a and
report ptxas's register and spill counts. Run it in a process WITHOUT ``TRITON_INTERPRET``: Triton
decides "interpreted or compiled" when the kernel module is first imported.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton import compile as triton_compile
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ._block_kernel import _block_fwd_kernel
from ._block_launcher import BlockConfig, block_configs

__all__ = ["compile_block_kernel", "main"]

_CONSTEXPRS = ("HEADS", "HEAD_DIM", "HAS_QKV_BIAS", "PRECISION", "DOT_F32")


def _ptxas() -> str:
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas-blackwell", "ptxas"):  # the newer one reads the PTX version Triton emits
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"no ptxas in {folder}")


def compile_block_kernel(dtype: str, cfg: BlockConfig, heads: int, dim: int, qkv_bias: bool = True,
                         arch: int = 90) -> dict:  # fmt: skip
    """Compile one variant; returns {"registers": int, "spill_bytes": int} from ptxas -v."""
    signature, constants = {}, {}
    for name in _block_fwd_kernel.arg_names:
        if name in ("x", "y") or name.endswith("_w") or name.endswith("_b"):
            signature[name] = "*" + dtype
        elif name == "tab":
            signature[name] = "*i32"
        elif name in ("eps1", "eps2", "qk_scale"):
            signature[name] = "fp32"
        elif name in _CONSTEXPRS or name.startswith("BLOCK_"):
            signature[name] = "constexpr"
        else:
            signature[name] = "i32"
    constants.update(HEADS=heads, HEAD_DIM=dim // heads, HAS_QKV_BIAS=qkv_bias, DOT_F32=False,
                     PRECISION="ieee" if dtype == "fp32" else "tf32",
                     **{k: v for k, v in cfg._asdict().items() if k != "num_warps"})  # fmt: skip
    src = ASTSource(fn=_block_fwd_kernel, signature=signature, constexprs=constants)
    compiled = triton_compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": cfg.num_warps})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w", encoding="utf-8") as f:
            f.write(compiled.asm["ptx"])
        result = subprocess.run([_ptxas(), "-v", f"--gpu-name=sm_{arch}a", ptx, "-o", os.path.join(tmp, "k.cubin")],
                                capture_output=True, text=True, check=True)  # fmt: skip
    log = result.stdout + result.stderr
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return {"registers": int(registers.group(1)) if registers else -1, "spill_bytes": int(spills.group(1)) if spills else -1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compile every fused-block kernel variant for sm_90a (no GPU needed).")
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90: H100 / H200)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        p.error("unset TRITON_INTERPRET: the interpreter compiles nothing")
    worst = 0
    variants = block_configs()
    for i, (dtype, dim, heads, cfg) in enumerate(variants, 1):
        info = compile_block_kernel(dtype, cfg, heads, dim, arch=args.arch)
        worst = max(worst, info["spill_bytes"])
        print(f"[{i:3d}/{len(variants)}] {dtype} dim {dim} heads {heads} BLOCK_M {cfg.BLOCK_M} BLOCK_S {cfg.BLOCK_S} "
              f"warps {cfg.num_warps}: {info['registers']} registers, {info['spill_bytes']} B spilled", flush=True)  # fmt: skip
    print(f"{len(variants)} variants compiled for sm_{args.arch}a; largest spill {worst} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
