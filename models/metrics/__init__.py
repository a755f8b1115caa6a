"""Metrics (FID/KID, precision/recall/F1, GAN-test classifier, plots) and the evaluators that use them."""
