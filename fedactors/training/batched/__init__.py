"""Layer, loss and optimizer math over a whole cohort's stacked weights.

Every tensor here has a leading *client* axis: weights are ``(C, *shape)``,
activations ``(C, B, *features)``. Each client's slice is computed exactly as
its own Keras layer would compute it, so a cohort trains in one TensorFlow
computation instead of C small ones. The plans are read from the scenario's
own Keras objects (layer configs, loss, optimizer hyperparameters); anything
that cannot be reproduced faithfully raises :class:`Unsupported` with the
reason, and the per-device loop is used instead.

* :mod:`~fedactors.training.batched.layers`: ``plan_layers``, ``LayerPlan``, ``has_dropout``
* :mod:`~fedactors.training.batched.losses`: ``plan_loss``
* :mod:`~fedactors.training.batched.optimizers`: ``plan_optimizer``, ``OptimizerPlan``,
  ``check_combination``
"""

from fedactors.training.batched.layers import LayerPlan, has_dropout, plan_layers
from fedactors.training.batched.losses import plan_loss
from fedactors.training.batched.optimizers import OptimizerPlan, check_combination, plan_optimizer
from fedactors.training.batched.unsupported import Unsupported

__all__ = ["LayerPlan", "OptimizerPlan", "Unsupported", "check_combination", "has_dropout",
           "plan_layers", "plan_loss", "plan_optimizer"]
