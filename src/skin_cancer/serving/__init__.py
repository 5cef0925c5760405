"""Serving: a trained model with its operating point as a classifier (classifier), the REST model the
registry holds (rest) and the web app (app)."""
