"""Models: the backbone registry (backbones) and the weights it ports (efficientnet_lite,
torch_weights), the classifier (classifier), cached frozen features (features), training and
fine-tuning (training, distribute), ensembles (ensemble), forward passes outside training (inference)."""
