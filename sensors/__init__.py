"""Sensors: the intake sensors that launch runs and the run-status sensors that settle entries."""
