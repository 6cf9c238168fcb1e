"""visionforge-distill: teacher -> student distillation, retrieval evaluation, reference indexes."""

__version__ = "0.1.0"
