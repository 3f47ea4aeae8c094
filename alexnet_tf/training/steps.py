"""The train and eval steps, built apart from the loop.

`TrainSteps` holds the compiled functions for one model, optimizer and
strategy: `train_loop(iterator, n)` runs n training steps inside one
`tf.function` call (tf-models' Orbit does the same), so Python and the
host-device sync cost once per n steps; `evaluate(dataset)` scores a
dataset. The loss is the softmax cross-entropy of the logits averaged over
the GLOBAL batch, as tf.distribute expects.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from alexnet_tf.data import input_pipeline
from alexnet_tf.model import placement
from alexnet_tf.model.alexnet import LOGITS_LAYER
from alexnet_tf.training.reporting import MetricWindow


def _topk_correct(labels, logits, k):
    k = min(k, logits.shape[-1])
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32))


class TrainSteps:
    """Train and eval steps of `model` under `strategy`.

    Args:
        global_batch: the batch summed over replicas (the loss's denominator).
        colocate_gradients: take gradients with `placement.colocated_gradients`
            so each tower's backward ops run on its forward ops' device.
        jit_compile: XLA-compile each replica's training step.
    """

    def __init__(self, model: keras.Model, optimizer, strategy: tf.distribute.Strategy,
                 global_batch: int, *, colocate_gradients: bool = False,
                 jit_compile: bool = False):
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.global_batch = global_batch
        self.colocate_gradients = colocate_gradients
        self._logits = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
        self._loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        replica_step = self._replica_train_step
        if jit_compile:
            replica_step = tf.function(replica_step, jit_compile=True)
        self._replica_step = replica_step
        self._train_loop = tf.function(self._loop)
        self._eval_step = tf.function(self._eval)

    # ---- per replica
    def _figures(self, images, labels, training):
        logits = tf.cast(self._logits(images, training=training), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return losses, logits

    def _scaled_loss(self, losses):
        loss = tf.nn.compute_average_loss(losses, global_batch_size=self.global_batch)
        return self.optimizer.scale_loss(loss) if self._loss_scaling else loss

    def _replica_train_step(self, features, labels):
        images = input_pipeline.training_images(features)
        variables = self.model.trainable_variables
        if self.colocate_gradients:  # graph gradients, placed with their tower
            losses, logits = self._figures(images, labels, True)
            grads = placement.colocated_gradients(self._scaled_loss(losses), variables)
        else:
            with tf.GradientTape() as tape:
                losses, logits = self._figures(images, labels, True)
                scaled = self._scaled_loss(losses)
            grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return (tf.reduce_sum(losses), _topk_correct(labels, logits, 1),
                _topk_correct(labels, logits, 5))

    def _replica_eval_step(self, images, labels):
        # At the end of the validation split a replica can get an empty batch
        # (tf.distribute's partial batches); oneDNN convolutions fail on those.
        def figures():
            losses, logits = self._figures(images, labels, False)
            return (tf.reduce_sum(losses), _topk_correct(labels, logits, 1),
                    _topk_correct(labels, logits, 5))
        zeros = (tf.constant(0.0),) * 3
        sums = tf.cond(tf.size(labels) > 0, figures, lambda: zeros)
        return (*sums, tf.cast(tf.size(labels), tf.float32))

    def _summed(self, per_replica):
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for v in per_replica]

    # ---- compiled
    def _loop(self, iterator, num_steps):
        sums = [tf.constant(0.0)] * 3
        for _ in tf.range(num_steps):
            step = self._summed(self.strategy.run(self._replica_step, args=next(iterator)))
            sums = [a + b for a, b in zip(sums, step)]
        # Each loss is computed before its update, so the last update of a
        # loop can break the weights with every loss still finite.
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                                for v in self.model.trainable_variables])
        return sums, finite

    def _eval(self, inputs):
        return self._summed(self.strategy.run(self._replica_eval_step, args=inputs))

    # ---- public
    def train_loop(self, iterator, num_steps: int) -> tuple[float, float, float]:
        """Runs `num_steps` training steps; returns the sums over their
        examples of (loss, top-1 correct, top-5 correct). The loss sum is NaN
        when the weights became non-finite."""
        sums, finite = self._train_loop(iterator, tf.constant(num_steps, tf.int32))
        loss, top1, top5 = (float(v) for v in sums)
        return (loss if bool(finite) else float("nan")), top1, top5

    def evaluate(self, dataset) -> dict:
        """Loss and top-1/top-5 error over a (distributed) dataset."""
        window = MetricWindow()
        for inputs in dataset:
            window.add(*[float(v) for v in self._eval_step(inputs)])
        if window.count == 0:
            raise ValueError("the validation dataset gave no images")
        return window.figures()
