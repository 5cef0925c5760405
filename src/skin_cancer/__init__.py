"""Skin lesion classification pipeline. `from skin_cancer import load_classifier` to use a trained model."""


def __getattr__(name: str):
    # Lazy, so that importing any submodule does not load the serving code and its dependencies.
    if name == "load_classifier":
        from skin_cancer.serving import load_classifier

        return load_classifier
    raise AttributeError(f"module 'skin_cancer' has no attribute {name!r}")
