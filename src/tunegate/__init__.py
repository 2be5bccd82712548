"""tunegate: staged, gated validation of fine-tuning experiments."""

__version__ = "0.1.0"
