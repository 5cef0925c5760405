"""Skin lesion classification pipeline. `from skin_cancer import load_classifier` to use a trained model."""

from skin_cancer import host

# The one thing importing the package does: cap the numerical libraries at AVX2 (host.pin), which
# only works before they load, so that the same seed gives the same model on any x86-64 CPU.
host.pin()


def __getattr__(name: str):
    # Lazy, so that importing any submodule does not load the serving code and its dependencies.
    if name == "load_classifier":
        from skin_cancer.serving.classifier import load_classifier

        return load_classifier
    raise AttributeError(f"module 'skin_cancer' has no attribute {name!r}")
