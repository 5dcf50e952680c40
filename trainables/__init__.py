"""Models and training loops as plain functions of a config: runnable and testable without Ray.

`Trainable` is the contract a study tunes (built-ins and plugins alike); see trainables/trainable.py and
docs/TRAINABLES.md.
"""
from trainables.trainable import ModelSpec, Trainable, TrainableError

__all__ = ["ModelSpec", "Trainable", "TrainableError"]
