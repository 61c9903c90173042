"""Producing the shipped models end to end (`make models`) and their model card."""
