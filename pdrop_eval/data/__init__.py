"""Samples and the loaders that produce them: one module per data format, plus image and prompt helpers."""
