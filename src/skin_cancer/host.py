"""What machine a number came from: the same code, data and seed give other weights on another
instruction set (oneDNN picks kernels per CPU), so every run and model report records it."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

# Instruction sets whose presence changes which oneDNN kernels run.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


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


def describe() -> dict[str, str]:
    """CPU model, its instruction sets, cores this process may use, the TensorFlow / oneDNN /
    OpenVINO versions and the settings that change their kernels and threads."""
    try:
        with open("/proc/cpuinfo") as handle:
            model, flags = cpu_model_and_flags(handle.read())
    except OSError:  # not Linux
        model, flags = platform.processor() or platform.machine(), []

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
    }


def one_line(host: dict[str, str]) -> str:
    """The description as one line for reports."""
    return (
        f"{host.get('cpu', 'unknown')} ({host.get('cores', '?')} cores; {host.get('isa', '?')}), TensorFlow "
        f"{host.get('tensorflow', '?')} (oneDNN {host.get('onednn_opts', '?')}, max ISA "
        f"{host.get('onednn_max_cpu_isa', '?')}), OpenVINO {host.get('openvino', '?')}"
    )
