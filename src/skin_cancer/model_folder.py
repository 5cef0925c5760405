"""The files of a trained model's folder: the pipeline's models/, an ensemble member, what serving
loads. The network, the operating point fitted with it and the out-of-distribution detector."""

MODEL_FILE = "model.keras"
OPERATING_POINT_FILE = "operating_point.json"
OOD_FILE = "ood.npz"
