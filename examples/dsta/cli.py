"""What every CLI of the example shares: one `--device` convention.

`--device auto` (the default everywhere) is CUDA when a CUDA device is available, else the CPU; `cpu`,
`cuda` and `cuda:N` are taken literally and checked while the arguments are parsed, so an unavailable
device is one sentence from argparse (exit code 2), not a traceback from deep inside the run.
"""
from __future__ import annotations

import argparse

import torch

__all__ = ["DEVICE_HELP", "DeviceError", "HelpFormatter", "resolve_device", "add_device_argument"]

DEVICE_HELP = "auto (CUDA if available, else CPU), cpu, cuda or cuda:N"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except None (the help text says what happens then) and a flag's False."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class DeviceError(ValueError):
    """A device name that is malformed or not available on this machine."""


def resolve_device(name="auto") -> torch.device:
    """`"auto"`, `"cpu"`, `"cuda"`, `"cuda:N"` (or a `torch.device`) -> an available `torch.device`.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device {name!r} is not one of {DEVICE_HELP}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceError(f"device {name!r} is not supported here; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r}: no CUDA device is available on this machine (use cpu or auto)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _device_type(text: str) -> torch.device:
    try:
        return resolve_device(text)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """Add `--device` to `parser`; the parsed value is an available `torch.device`."""
    parser.add_argument("--device", type=_device_type, default=default,
                        help=f"{DEVICE_HELP} (default: %(default)s)")  # fmt: skip
