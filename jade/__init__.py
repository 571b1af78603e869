"""JADE Factory: turns web image-text pairs into fine-grained VQA and dense-caption data."""

__version__ = "0.1.0"
