"""mapflow: map how information flows inside video LLMs (attention knockout on nnsight)."""

__version__ = "0.1.0"
