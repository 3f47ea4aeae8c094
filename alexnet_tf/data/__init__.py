"""Records schema, label map, stats.json, shared preprocessing and the tf.data input."""
