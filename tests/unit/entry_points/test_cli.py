"""The `skin-cancer` command: its exit codes, one-line errors, and defaults composed from conf/."""

import argparse
import shutil

import pandas as pd
import yaml

from skin_cancer.cli import AUDIT_OPTIONS, audit_settings
from skin_cancer.cli import main as cli
from tests.helpers import AUDIT, ROOT, make_other_dataset


def test_compose_refuses_an_out_of_range_value_and_writes_nothing(tmp_path, capsys):
    assert cli(["compose", "train.head.patience=0", "--out", str(tmp_path / "params.yaml")]) == 2
    error = capsys.readouterr().err.strip()
    assert "train.head.patience" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "params.yaml").exists()


def test_cli_audit_writes_outputs_and_fails_cleanly(make_dataset, tmp_path, capsys):
    ours = make_dataset(train=3, test=2)
    shutil.copy(ours / "train" / "benign" / "0.jpg", ours / "test" / "benign" / "copy.jpg")
    other = make_other_dataset(ours, ours, tmp_path)
    assert cli(["audit", str(ours), "--against", str(other), "--out", str(tmp_path / "out"), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "with a copy in train/val: 1" in printed and "copies in other" in printed
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.json", "images.csv", "pairs.csv", "provenance.csv"}
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert list(zip(pairs.a, pairs.b, pairs.exact)) == [("train/benign/0.jpg", "test/benign/copy.jpg", True)]
    (tmp_path / "empty").mkdir()
    assert cli(["audit", str(tmp_path / "empty")]) == 2
    assert "has no class folders" in capsys.readouterr().err


def test_cli_audit_takes_its_defaults_from_conf_or_asks_for_them(make_dataset, tmp_path, monkeypatch, capsys):

    ours = make_dataset(train=3, test=2)
    given = {"candidate_distance": 3, "min_correlation": None, "workers": None, "max_pixels": None}
    settings = audit_settings(argparse.Namespace(**given))  # run from the project: conf/ composed
    assert settings == {
        **AUDIT,
        "candidate_distance": 3,
        "workers": yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["audit"]["workers"],
    }
    monkeypatch.chdir(tmp_path)  # no conf/ here: the options not given are named
    assert cli(["audit", str(ours), "--out", str(tmp_path / "out"), "--candidate-distance", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("or give --min-correlation, --workers, --max-pixels") and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    everything = [f"--{option.replace('_', '-')}={value}" for option, value in {**AUDIT, "candidate_distance": 3}.items()]
    assert len(everything) == len(AUDIT_OPTIONS)
    assert cli(["audit", str(ours), "--out", str(tmp_path / "out"), *everything]) == 0
