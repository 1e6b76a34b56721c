"""Training stage: data, teacher cache, student models, losses, trainer, verification metrics."""
