"""Training: the QLoRA trainer, its memory estimate and its executors (the embedded model
is `tunegate.models`)."""
