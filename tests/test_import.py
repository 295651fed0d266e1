"""`import stattn` is quiet and light: no output, no Triton, no torch._dynamo."""
import subprocess
import sys


def test_import_prints_nothing_and_imports_no_triton():
    code = "import sys, stattn, stattn.nn; print(sorted(m for m in ('triton', 'torch._dynamo') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""
    assert done.stdout.strip() == "[]"


def test_info_runs():
    done = subprocess.run([sys.executable, "-m", "stattn.info"], capture_output=True, text=True, check=True)
    assert "temporal_attention" in done.stdout and "grouped_attention" in done.stdout
