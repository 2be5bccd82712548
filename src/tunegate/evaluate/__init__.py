"""Evaluation: metrics over generations, and running generated code."""
