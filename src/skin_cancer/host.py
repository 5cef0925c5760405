"""What machine a number came from, and the settings that make it not matter.

oneDNN (TensorFlow's convolutions, and the matrix products inside its Eigen kernels), NumPy's SIMD
loops and OpenBLAS each pick kernels for the CPU they find: on AVX-512 other ones than on AVX2, so
other rounding and, after training, other weights. `pin()` caps all three at the AVX2 level before
they load; every run and model report still records the machine and the caps (`describe`).
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

# Instruction sets whose presence changes which oneDNN kernels run.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")

# The AVX2 level for each library that dispatches at run time. Each library reads its variable
# once, when it loads, which is why `pin()` runs when the package is imported, before them.
AVX2_CEILING = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy 2's targets above AVX2
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS's AVX2 kernels
}
# Set (to anything but 0) to run every library at the CPU's own level: faster on AVX-512, but
# the numbers are then those of this kind of CPU only.
NATIVE = "SKIN_CANCER_NATIVE_ISA"


def ceiling_for(environ: dict[str, str], cpu_flags: list[str]) -> dict[str, str]:
    """The variables of AVX2_CEILING to set: none when NATIVE is set or the CPU lacks AVX2 or FMA
    (OpenBLAS's AVX2 kernels would not run there), and none the environment already sets (a
    caller's own cap wins)."""
    if environ.get(NATIVE, "0") != "0" or not {"avx2", "fma"} <= set(cpu_flags):
        return {}
    return {key: value for key, value in AVX2_CEILING.items() if key not in environ}


def pin() -> None:
    """Cap oneDNN, NumPy and OpenBLAS at AVX2 in this process's environment (see ceiling_for),
    so that a seed gives the same numbers on an AVX2 and an AVX-512 CPU. Libraries already
    loaded keep their kernels: describe() reports what is in effect."""
    os.environ.update(ceiling_for(dict(os.environ), this_cpu()[1]))


def cpu_model_and_flags(cpuinfo: str) -> tuple[str, list[str]]:
    """(CPU model name, the ISA_FLAGS it has) from the text of /proc/cpuinfo."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, [flag for flag in ISA_FLAGS if flag in flags]


def this_cpu() -> tuple[str, list[str]]:
    """(model, ISA_FLAGS) of the CPU this runs on; off Linux, the platform's name and no flags
    (nothing known, so nothing capped)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return cpu_model_and_flags(handle.read())
    except OSError:
        return platform.processor() or platform.machine(), []


def describe() -> dict[str, str]:
    """CPU model, its instruction sets, cores this process may use, the TensorFlow / oneDNN /
    OpenVINO versions and the settings that change their kernels and threads."""
    model, flags = this_cpu()

    def installed(*packages: str) -> str:
        for package in packages:  # the first of a package's distributions that is installed
            try:
                return version(package)
            except PackageNotFoundError:
                continue
        return "not installed"

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model or "unknown",
        "isa": ",".join(flags) or "none of " + ",".join(ISA_FLAGS),
        "cores": str(cores),
        "tensorflow": installed("tensorflow", "tensorflow-cpu", "tensorflow-intel"),
        "openvino": installed("openvino"),
        # TensorFlow's oneDNN kernels are on unless TF_ENABLE_ONEDNN_OPTS=0; ONEDNN_MAX_CPU_ISA caps them.
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        **numpy_kernels(),
    }


def numpy_kernels() -> dict[str, str]:
    """The SIMD level NumPy's loops run at and OpenBLAS's kernel family, as loaded (not as asked
    for: a library loaded before `pin()` keeps the CPU's own)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    from threadpoolctl import threadpool_info

    enabled = [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]
    blas = [f"{pool['internal_api']} {pool.get('architecture', '?')}" for pool in threadpool_info() if pool["user_api"] == "blas"]
    return {"numpy_simd": enabled[-1] if enabled else "baseline", "blas": ", ".join(blas) or "none"}


def one_line(host: dict[str, str]) -> str:
    """The description as one line for reports."""
    return (
        f"{host.get('cpu', 'unknown')} ({host.get('cores', '?')} cores; {host.get('isa', '?')}), TensorFlow "
        f"{host.get('tensorflow', '?')} (oneDNN {host.get('onednn_opts', '?')}, max ISA "
        f"{host.get('onednn_max_cpu_isa', '?')}), NumPy SIMD {host.get('numpy_simd', '?')}, "
        f"{host.get('blas', '?')}, OpenVINO {host.get('openvino', '?')}"
    )
