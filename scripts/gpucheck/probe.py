"""Is there a CUDA GPU to measure? Standard library only at import: this runs under a bare
`python3` before anything is installed, so a machine without a GPU installs nothing."""

from __future__ import annotations

import shutil
import subprocess

NO_GPU = "gpu-check: no CUDA GPU on this machine ({why}); nothing measured, nothing written. Run `make gpu-check` where `nvidia-smi` lists a GPU."  # noqa: E501


def no_cuda_reason() -> str | None:
    """None when a CUDA GPU is usable; else why not, in a few words.

    torch decides where it is importable (its build may lack CUDA even with a GPU present);
    without torch, `nvidia-smi -L` listing a GPU means one is there to install torch for."""
    try:
        import torch
    except ImportError:
        return None if _nvidia_smi_lists_gpu() else "no torch, and nvidia-smi lists no GPU"
    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"torch {torch.__version__}, {build}, sees no CUDA device"


def _nvidia_smi_lists_gpu() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def no_gpu_line(reason: str) -> str:
    return NO_GPU.format(why=reason)
