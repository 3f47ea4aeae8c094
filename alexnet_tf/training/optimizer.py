"""The paper's SGD update (section 5) as a Keras 3 optimizer.

For every weight w, with learning rate lr:

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

(the paper: momentum 0.9, weight decay 0.0005, batch 128, lr 0.01 divided by
10 when the validation error stops improving).

Why not `keras.optimizers.SGD(momentum=0.9, weight_decay=5e-4)`: Keras applies
its `weight_decay` *decoupled*, as `w <- w - lr * wd * w` outside the momentum
buffer (Loshchilov & Hutter's AdamW form). In the paper's rule the decay term
goes into v, so it is accumulated by the momentum exactly like a gradient of
the L2 penalty (wd/2)*|w|^2 would be; with momentum 0.9 the two differ by about
a factor of 10 in effective decay. This optimizer implements the paper's form.

Biases: the paper states the rule for "weight w"; cuda-convnet, which the
paper's network was trained with, puts its weight cost on the weight matrices
only and gives biases none (Caffe's reference AlexNet does the same with
decay_mult 0). So by default the decay term is applied to kernels (variables
of rank >= 2) and not to biases; `decay_biases=True` applies it to every
variable. `exclude_from_weight_decay(...)` also removes variables from decay.

The learning rate is a tracked variable when given as a float: the training
loop lowers it on a plateau with `optimizer.learning_rate = lr / 10`, and
`tf.train.Checkpoint(optimizer=...)` saves and restores it together with the
momentum slots and the iteration count. A `LearningRateSchedule` works too.
"""

from __future__ import annotations

import keras
from keras import ops

from alexnet_tf import defaults

PAPER_LEARNING_RATE = defaults.LEARNING_RATE
PAPER_MOMENTUM = defaults.MOMENTUM
PAPER_WEIGHT_DECAY = defaults.WEIGHT_DECAY


@keras.saving.register_keras_serializable(package="alexnet_tf")
class PaperSGD(keras.optimizers.Optimizer):
    """SGD with momentum and the paper's coupled weight decay (section 5).

    Args:
        learning_rate: float, `LearningRateSchedule`, or callable.
        momentum: the paper's 0.9.
        weight_decay: the paper's 0.0005; enters the velocity as
            `weight_decay * lr * w` (NOT Keras' decoupled weight decay).
        decay_biases: apply the decay term to rank-0/1 variables (biases) too.
            Default False, as cuda-convnet and Caffe did.
        **kwargs: the base `keras.optimizers.Optimizer` arguments (clipnorm,
            loss_scale_factor, ...), except Keras' own decoupled weight decay.
    """

    def __init__(self, learning_rate=PAPER_LEARNING_RATE, momentum=PAPER_MOMENTUM,
                 weight_decay=PAPER_WEIGHT_DECAY, decay_biases=False,
                 name="paper_sgd", **kwargs):
        # Keras' `weight_decay` slot stays None so the base class never applies
        # its decoupled decay on top of ours.
        super().__init__(learning_rate=learning_rate, weight_decay=None,
                         name=name, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if float(weight_decay) < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.momentum = float(momentum)
        self.coupled_weight_decay = float(weight_decay)
        self.decay_biases = bool(decay_biases)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity")
        # Decided once here, by variable index, so update_step stays a lookup.
        self._decays = [self._decays_variable(v) for v in variables]

    def _decays_variable(self, variable) -> bool:
        if self.coupled_weight_decay == 0.0 or not self._use_weight_decay(variable):
            return False
        return self.decay_biases or len(variable.shape) >= 2

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        velocity = self.velocities[index]
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.multiply(lr, gradient)
        if self._decays[index]:
            wd = ops.cast(self.coupled_weight_decay, variable.dtype)
            step = ops.add(step, ops.multiply(ops.multiply(wd, lr), variable))
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(velocity, ops.subtract(ops.multiply(momentum, velocity), step))
        self.assign_add(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "weight_decay": self.coupled_weight_decay,
            "decay_biases": self.decay_biases,
        })
        return config
