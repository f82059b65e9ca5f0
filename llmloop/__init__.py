"""llmloop: fine-tune, serve, guard, retrieve, log, label and fine-tune again."""

__version__ = "0.1.0"
