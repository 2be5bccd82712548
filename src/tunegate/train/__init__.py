"""Training: the embedded tiny model and the QLoRA trainer."""
