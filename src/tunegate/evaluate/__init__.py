"""Evaluation: metrics over generations (generated code runs in `tunegate.sandbox`)."""
