"""What a person reads after a run: the model card, its plots, the summary line, and the run record."""
