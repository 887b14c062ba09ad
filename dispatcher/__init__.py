"""Phase 4 -> Phase 5 prediction dispatcher."""

__version__ = "0.1.0"
