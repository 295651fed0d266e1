"""The built wheel, installed non-editable, as a user gets it: every package file ships, LICENSE is in
its metadata, and the native backend (attention and whole block) compiles from the installed ``kernels.c``
and matches the reference.

The wheel is built from the files a clone has (git's tracked and unignored files) copied to a temporary
folder, with this environment's setuptools (no network); it is installed with ``pip --target`` and run in
a subprocess whose ``PYTHONPATH`` is that folder, from outside the repository, so the repository's own
``stattn`` cannot be imported by mistake. torch and numpy are this environment's. About 10-30 s.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import stattn
from stattn.ops import native

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.wheel

_RUN_NATIVE = r"""
import json, os, sys
from pathlib import Path
import torch, stattn
import stattn.nn, stattn.nn.fused
from stattn.ops.reference import grouped_attention_reference, temporal_attention_reference
from stattn.testing import assert_close, make_inputs

q, k, v = make_inputs(4, 5, 17, 8, 4, seed=3)  # packed (strided) views, a DSTA-sized token grid
out_t = stattn.temporal_attention(q, k, v, backend="native")
assert_close(temporal_attention_reference(*(t.double() for t in (q, k, v))), out_t)
flat = ([i for g in stattn.POSETRACK.groups for i in g], [len(g) for g in stattn.POSETRACK.groups])
out_g = stattn.grouped_attention(q, k, v, stattn.POSETRACK.groups, backend="native")
expected = grouped_attention_reference(*(t.double() for t in (q, k, v)), *flat)
assert_close(expected.reshape(out_g.shape), out_g)
block = stattn.nn.LocalAwarenessBlock(32, "temporal").eval()  # in inference: one native local_block call
x = torch.randn(1, 3, 17, 32)
with torch.no_grad():
    assert stattn.ops.which_backend("local_block", x, stattn.nn.fused.block_weights(block),
                                    **stattn.nn.fused.op_meta(block)) == "native"
    assert_close(stattn.ops.local_block_reference(x.double(), stattn.nn.fused.block_weights(block.double()),
                                                  **stattn.nn.fused.op_meta(block)), block.float()(x))
cache = Path(os.environ["STATTN_CACHE_DIR"])
print(json.dumps({"file": stattn.__file__, "version": stattn.__version__,
                  "built": sorted(p.name for p in cache.rglob("*.so"))}))
"""


def _clone_files() -> list[str]:
    """What a fresh clone holds of the package: tracked and untracked-but-not-ignored files."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git to list the repository's files")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
                             "stattn", "pyproject.toml", "README.md", "LICENSE"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return [f for f in listed if (REPO / f).is_file()]  # a tracked file deleted in the working tree is gone


def _pip(*args, cwd):
    done = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"],
                          cwd=cwd, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, f"pip {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """(files copied from the clone, the built wheel, the folder it is installed in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = _clone_files()
    for name in files:
        (tmp / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp / "src" / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(tmp / "src"), cwd=tmp)
    (built,) = (tmp / "dist").glob("*.whl")
    _pip("install", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(built), cwd=tmp)
    return files, built, tmp / "site"


def test_wheel_ships_every_package_file_and_the_licence(wheel):
    files, built, _ = wheel
    assert built.name == f"stattn-{stattn.__version__}-py3-none-any.whl"  # the version lives in _version.py
    names = set(zipfile.ZipFile(built).namelist())
    package = {f for f in files if f.startswith("stattn/")}
    assert {"stattn/ops/native/kernels.c", "stattn/py.typed"} <= package
    assert package - names == set(), "package files missing from the wheel"
    dist_info = f"stattn-{stattn.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    licence = zipfile.ZipFile(built).read(f"{dist_info}/licenses/LICENSE").decode()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    metadata = zipfile.ZipFile(built).read(f"{dist_info}/METADATA").decode()
    assert re.search(r"^License-Expression: Apache-2\.0$", metadata, re.M)


@pytest.mark.skipif(native.compiler() is None, reason="no C compiler: the native backend is off")
def test_installed_wheel_runs_the_native_backend_like_the_reference(wheel, tmp_path):
    _, _, site = wheel
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET", "STATTN_BACKEND")}
    env.update(PYTHONPATH=str(site), STATTN_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", _RUN_NATIVE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).is_relative_to(site), result["file"]
    assert result["version"] == stattn.__version__
    # the kernel was compiled from the installed kernels.c (a wheel without it silently ran the reference)
    assert any(name.startswith("stattn_h8_d4_") for name in result["built"]), result["built"]
    info = subprocess.run([sys.executable, "-m", "stattn.info"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert info.returncode == 0, info.stderr[-3000:]
    assert re.search(r"temporal_attention\s+cpu\s+->\s+native", info.stdout), info.stdout
    assert re.search(r"local_block op\s+cpu\s+->\s+native", info.stdout), info.stdout
