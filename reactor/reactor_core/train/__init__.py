"""Training: losses, trainer, optimisation."""
