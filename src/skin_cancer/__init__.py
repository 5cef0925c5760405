"""Skin cancer detection from dermoscopic images: an experiment-tracked research pipeline."""
