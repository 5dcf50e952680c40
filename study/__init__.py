"""Ray Tune + Optuna + MLflow around the trainables, and the `study` command line."""
