"""Ray Tune sweeps of the BYOL core, recorded in MLflow."""
