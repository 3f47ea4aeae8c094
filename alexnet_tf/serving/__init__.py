"""Export for TensorFlow Serving: the serving module, signatures and SavedModel checks."""
