"""The installed `skin-cancer` console script in a subprocess, as a shell script would use it: stdout
holds only results, stderr only what went wrong, the exit code says which (0, 1, 2)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from skin_cancer import paths


def skin_cancer(*args: str) -> subprocess.CompletedProcess:
    """The console script with stderr a pipe, not a terminal (no progress bars)."""
    script = Path(sys.executable).parent / "skin-cancer"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300)


def test_one_image_is_one_line_and_nothing_else(trained):
    image = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0]
    quiet = skin_cancer("predict", image)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.count("\n") == 1 and quiet.stdout.startswith(f"{image}: ")
    assert not Path("predictions.csv").exists()
    verbose = skin_cancer("predict", image, "--verbose", "--format", "json")
    assert verbose.returncode == 0 and "oneDNN" in verbose.stderr  # the library logs come back
    row = json.loads(verbose.stdout)
    assert row["image"] == image and row["label"] in ("benign", "malignant") and 0 <= row["probability"] <= 1


def test_a_folder_gives_csv_on_stdout_and_a_file(trained, tmp_path):
    folder = trained.data.root + "/test"
    result = skin_cancer("predict", folder, "--format", "csv", "--out", str(tmp_path / "out.csv"))
    assert result.returncode == 0, result.stderr
    printed = pd.read_csv(pd.io.common.StringIO(result.stdout))
    written = pd.read_csv(tmp_path / "out.csv")
    assert len(printed) == len(written) == len(list(Path(folder).rglob("*.jpg")))
    assert printed.probability.tolist() == pytest.approx(written.probability.tolist(), abs=1e-4)  # printed at %g
    assert result.stderr.strip() == f"wrote {tmp_path / 'out.csv'}"


def test_an_empty_folder_or_a_missing_path_is_a_usage_error_and_writes_nothing(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    for path, message in ((tmp_path / "empty", "no images found in"), (tmp_path / "nowhere", "no such file or folder")):
        result = skin_cancer("predict", str(path), "--out", str(tmp_path / "out.csv"))
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and message in result.stderr and str(path) in result.stderr
        assert not (tmp_path / "out.csv").exists()
    assert ".jpg" in skin_cancer("predict", str(tmp_path / "empty")).stderr  # names the suffixes it looked for
    unknown = skin_cancer("predict", str(tmp_path / "empty"), "--model", "nowhere.keras")
    assert unknown.returncode == 2


def test_good_and_corrupt_images_exit_1_naming_each_corrupt_one(trained, tmp_path):
    good = list(pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[:2])
    (tmp_path / "text.jpg").write_text("not an image")
    data = Path(good[0]).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    bad = [str(tmp_path / "text.jpg"), str(tmp_path / "cut.jpg")]
    result = skin_cancer("predict", good[0], *bad, good[1], "--out", str(tmp_path / "out.csv"))
    assert result.returncode == 1
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == good
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[0] for line in errors] == bad
    written = pd.read_csv(tmp_path / "out.csv")
    assert written.image.tolist() == [good[0], *bad, good[1]] and written.error.notna().tolist() == [False, True, True, False]
