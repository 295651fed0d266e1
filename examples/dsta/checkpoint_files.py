"""Read ``torch.save`` checkpoint files safely: one job, :func:`load_checkpoint`.

    ckpt = load_checkpoint("td-hm_ViTPose-small.pth")   # dict of tensors, plain types, numpy arrays

Files in torch's zip format or its legacy one (``_use_new_zipfile_serialization=False``, which mmpose's
publishing tool has written) are read with ``torch.load(weights_only=True)``: only tensors, plain
containers and numpy arrays are unpickled. The numpy arrays are allowed because mmpose keeps them in its
``meta['dataset_meta']``; they are accepted under numpy 1.x (``numpy.core.multiarray``) and 2.x
(``numpy._core.multiarray``) names, since the unpickler matches the name written in the file. Anything
else is refused in one sentence naming the globals the file needs, found by scanning its pickles
without running them. What the checkpoint holds (key names, architecture) is ``backbone_weights``' job.
"""
from __future__ import annotations

import importlib
import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import torch

__all__ = ["load_checkpoint"]

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x and 2.x pickle names


def _numpy_globals() -> list[tuple[object, str]]:
    """numpy's array / scalar / dtype reconstruction globals as ``(object, pickled name)`` pairs.

    numpy 2 pickles ``numpy._core.multiarray.*``, numpy 1.x ``numpy.core.multiarray.*``: both names are
    listed for the same objects, because torch's ``weights_only`` unpickler matches the name written in
    the file, not the object it resolves to. The dtype classes (``numpy.dtypes.Float64DType``, ...) are
    the types of unpickled dtypes, which torch checks when it restores their state.
    """
    import numpy as np  # noqa: PLC0415

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    pairs = [(getattr(multiarray, fn), f"{mod}.{fn}") for mod in _NUMPY_MODULES for fn in ("_reconstruct", "scalar")]
    pairs += [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, name)
        if name.endswith("DType") and isinstance(cls, type):
            pairs.append((cls, f"numpy.dtypes.{name}"))
    return pairs


def _pickled_globals(path: Path) -> set[str]:
    """Every GLOBAL a ``torch.save`` file names: the zip format's ``data.pkl``, or the pickles at the
    head of the legacy format (magic number, protocol, system info, object, storage keys)."""
    names: set[str] = set()

    def scan(stream) -> None:
        for op, arg, _ in pickletools.genops(stream):
            if op.name == "GLOBAL":  # torch's weights_only unpickler knows no other opcode that imports
                names.add(arg.replace(" ", "."))

    with open(path, "rb") as f:
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as z:
                for member in z.namelist():
                    if member.endswith("data.pkl"):
                        scan(io.BytesIO(z.read(member)))
            return names
        f.seek(0)
        for _ in range(5):
            try:
                scan(f)
            except Exception:  # noqa: BLE001 - past the pickles (tensor bytes) or not a pickle at all
                break
    return names


def load_checkpoint(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` that also reads numpy arrays, in either torch format.

    Allowed: what torch's ``weights_only`` allows (tensors, plain containers) plus numpy's array,
    scalar and dtype reconstruction (:func:`_numpy_globals`), pickled under numpy 1.x or 2.x names. mmpose
    stores numpy arrays in ``meta.dataset_meta`` and its publishing tool may write the legacy format
    (``_use_new_zipfile_serialization=False``); both read here. Anything else is refused.

    Raises:
        RuntimeError: one sentence naming the globals the file needs that are not allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    allowed = _numpy_globals()
    already = set(torch.serialization.get_safe_globals())  # leave a caller's own allow-list as it was
    with torch.serialization.safe_globals([g for g in allowed if g not in already]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            refused = _refused_globals(path, {name for _, name in allowed})
            if not refused:
                reason = str(err).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
                raise RuntimeError(f"{path}: torch.load(weights_only=True) cannot read it: not a torch checkpoint, "
                                   f"or one it cannot parse ({' '.join(reason.split())})") from err  # fmt: skip
            raise RuntimeError(
                f"{path}: refused by torch.load(weights_only=True), which unpickles only tensors, plain "
                f"containers and numpy arrays, because the file needs {', '.join(sorted(refused))}; if you "
                "trust the file, extract its weights once with "
                "torch.save(torch.load(p, weights_only=False)['state_dict'], 'weights.pth')"
            ) from err


def _refused_globals(path: Path, numpy_names: set[str]) -> list[str]:
    """The globals of ``path`` that neither torch's ``weights_only`` nor the numpy list allows."""
    # torch's default allow-list, the one get_unsafe_globals_in_checkpoint uses (which reads zip files only)
    allowed_by_torch = getattr(torch._weights_only_unpickler, "_get_allowed_globals", dict)()
    user = {f"{g.__module__}.{g.__qualname__}" if not isinstance(g, tuple) else g[1]
            for g in torch.serialization.get_safe_globals()}  # fmt: skip
    return sorted(_pickled_globals(path) - set(allowed_by_torch) - user - numpy_names)
