"""The DVC stages' entry points, where they do their own checking before any work."""

import pytest

from tests.helpers import free_port


def test_training_does_not_start_when_the_tracking_server_is_down(tiny_cfg, tmp_path, monkeypatch):
    """The run is logged at the end of the pipeline: a dead server stops it before training, not after."""
    from skin_cancer.stages import train

    monkeypatch.chdir(tmp_path)  # nothing prepared here: the check comes first
    tiny_cfg.tracking.uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match="does not answer"):
        train.main(tiny_cfg)
