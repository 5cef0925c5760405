"""The machine description every run and model report carries."""

from skin_cancer.host import AVX2_CEILING, NATIVE, ceiling_for, cpu_model_and_flags, describe, one_line
from tests.helpers import ROOT

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16
"""


def test_the_cpu_and_the_instruction_sets_that_change_kernels_are_read_from_cpuinfo():
    assert cpu_model_and_flags(CPUINFO) == ("AMD EPYC 9R14", ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"])
    assert cpu_model_and_flags("model name : Old\nflags : sse2 avx\n") == ("Old", [])


def test_this_machine_is_described_with_what_changes_its_numbers(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    host = describe()
    assert host["onednn_max_cpu_isa"] == "AVX2" and int(host["cores"]) >= 1
    assert host["tensorflow"][0].isdigit() and host["cpu"] != "unknown"
    assert "max ISA AVX2" in one_line(host) and host["cpu"] in one_line(host)


def test_the_avx2_cap_is_set_unless_the_caller_sets_it_opts_out_or_the_cpu_cannot_run_it():
    avx512 = ["avx2", "fma", "avx512f"]
    assert ceiling_for({}, avx512) == AVX2_CEILING
    assert ceiling_for({}, ["avx2", "fma"]) == AVX2_CEILING  # an AVX2 CPU gets the same kernels
    # A caller's own setting wins; the rest is still capped.
    assert ceiling_for({"ONEDNN_MAX_CPU_ISA": "ALL"}, avx512) == {
        key: value for key, value in AVX2_CEILING.items() if key != "ONEDNN_MAX_CPU_ISA"
    }
    assert ceiling_for({NATIVE: "1"}, avx512) == {}
    assert ceiling_for({NATIVE: "0"}, avx512) == AVX2_CEILING
    assert ceiling_for({}, ["avx", "sse2"]) == {}  # OpenBLAS's Haswell kernels would not run


def test_importing_the_package_caps_a_fresh_process_and_describe_reports_the_kernels_in_effect():
    import json
    import os
    import subprocess
    import sys

    probe = "import skin_cancer, json; from skin_cancer.host import describe; print(json.dumps(describe()))"
    env = {key: value for key, value in os.environ.items() if key not in AVX2_CEILING and key != NATIVE}
    capped = json.loads(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout)
    native = json.loads(
        subprocess.run([sys.executable, "-c", probe], env={**env, NATIVE: "1"}, capture_output=True, text=True, check=True).stdout
    )
    if "avx2" in capped["isa"] and "fma" in capped["isa"]:
        assert capped["onednn_max_cpu_isa"] == "AVX2" and capped["numpy_simd"] in ("X86_V3", "AVX2")
        assert capped["blas"] == "openblas Haswell"
    assert native["onednn_max_cpu_isa"] == "unset"
    if "avx512f" in native["isa"]:
        assert native["numpy_simd"] not in ("X86_V3", "baseline") and native["blas"] != "openblas Haswell"


def test_every_script_caps_the_numerical_libraries_before_loading_them():
    """host.pin works only before NumPy, pandas, TensorFlow and the like load: a benchmark or script
    that imports one of them first runs with the CPU's own kernels (bench/stress.py did)."""
    import ast

    heavy = {"numpy", "pandas", "scipy", "sklearn", "tensorflow", "keras", "matplotlib", "mlflow"}
    late = []
    for path in sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            top = {name.split(".")[0] for name in names}
            if "skin_cancer" in top or "pipeline" in top:  # bench/pipeline.py imports the package first
                break
            if top & heavy:
                late.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                break
    assert not late, f"import skin_cancer before the numerical libraries in {late}"
