"""A SavedModel loaded as TF Serving loads it: the TF1 loader, the `serve`
tag, a graph-mode session; signatures run by the tensor names in their
SignatureDefs, as TF Serving's C++ feeds them."""

import tensorflow as tf


class ServingSession:
    def __init__(self, path):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(
                self.session, [tf.saved_model.SERVING], path)

    def run(self, signature_name, **inputs):
        signature = self.meta_graph.signature_def[signature_name]
        feeds = {signature.inputs[k].name: v for k, v in inputs.items()}
        fetches = {k: t.name for k, t in signature.outputs.items()}
        return self.session.run(fetches, feeds)

    def close(self):
        self.session.close()
