"""Atomic outputs: old or new output, never a mix; leftovers of killed writers are removed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skin_cancer.io import atomic_dir, atomic_path
from tests.helpers import ROOT

# A stage that replaces `out` with 50 files, slowly, and says when it has begun.
SLOW_STAGE = """
import sys, time
from pathlib import Path
from skin_cancer.io import atomic_dir
from skin_cancer.stages import run_stage

def main(cfg):
    with atomic_dir(sys.argv[1]) as tmp:
        for i in range(50):
            (tmp / f"new-{i}.txt").write_text("new")
            if i == 5:
                print("writing", flush=True)
            time.sleep(0.2)

run_stage(main)
"""


def old_output(folder: Path) -> Path:
    with atomic_dir(folder) as tmp:
        for i in range(3):
            (tmp / f"old-{i}.txt").write_text("old")
    return folder


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p != folder)


def start_slow_stage(out: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_STAGE, str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout.readline().strip() == "writing"
    return process


def test_replacing_a_folder_swaps_it_whole_with_normal_permissions(tmp_path):
    out = old_output(tmp_path / "out")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert siblings(out) == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_failing_block_keeps_the_old_output(tmp_path):
    out = old_output(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("stage failed")
    assert sorted(p.name for p in out.iterdir()) == ["old-0.txt", "old-1.txt", "old-2.txt"]
    assert siblings(out) == []


def test_files_get_normal_permissions_and_keep_their_suffix(tmp_path):
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras"
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model.keras").stat().st_mode & 0o777 == 0o666 & ~umask


def test_sigterm_mid_write_leaves_the_old_output_and_no_leftovers(tmp_path):
    out = old_output(tmp_path / "out")
    process = start_slow_stage(out)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert sorted(p.name for p in out.iterdir()) == ["old-0.txt", "old-1.txt", "old-2.txt"]
    assert siblings(out) == []


def test_sigkill_mid_write_leftovers_are_removed_by_the_next_run(tmp_path):
    out = old_output(tmp_path / "out")
    process = start_slow_stage(out)
    process.kill()
    process.wait(timeout=30)
    assert sorted(p.name for p in out.iterdir()) == ["old-0.txt", "old-1.txt", "old-2.txt"]
    assert len(siblings(out)) == 1  # the killed writer's partial folder
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert siblings(out) == []


def test_a_running_writers_folder_is_not_taken_for_a_leftover(tmp_path):
    out = old_output(tmp_path / "out")
    process = start_slow_stage(out)
    try:
        time.sleep(0.3)
        with atomic_dir(out) as tmp:
            (tmp / "other.txt").write_text("other")
        assert len(siblings(out)) == 1  # the live writer's folder is still there
    finally:
        process.kill()
        process.wait(timeout=30)
