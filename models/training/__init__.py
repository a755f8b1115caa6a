"""Training: one entry point (`python -m models.train --stage gan|embed|edit`), one module per stage."""
