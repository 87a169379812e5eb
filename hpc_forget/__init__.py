"""hpc-forget: measure catastrophic forgetting in multilingual language models at cluster scale."""

__version__ = "0.1.0"
