"""Figures and the homework report, made from logged study results; `open_study` for analysis scripts."""
from analysis.api import Study, open_study

__all__ = ["Study", "open_study"]
