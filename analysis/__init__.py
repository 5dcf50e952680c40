"""Figures and the homework report, made from logged study results."""
