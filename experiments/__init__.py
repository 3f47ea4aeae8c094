"""Project-specific experiments, apart from the library (which never imports them)."""
