"""The machine description every run and model report carries."""

from skin_cancer.host import cpu_model_and_flags, describe, one_line

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
