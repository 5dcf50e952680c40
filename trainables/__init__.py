"""Models and training loops as plain functions of a config: runnable and testable without Ray."""
