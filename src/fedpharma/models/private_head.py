"""Shared trunk, private heads: each partner's task head is trained and kept at that partner.

In a multi-pharma consortium every partner has *its own* tasks (its assays and targets; most
labels missing). The trunk — the hidden layers that turn fingerprints into a representation — is
federated; the head — one linear output per task of this partner — never leaves the site, in any
form. This is the architecture MELLODDY ran across ten pharma companies (Heyndrickx et al. 2023,
"MELLODDY: cross-pharma federated learning at unprecedented scale unlocks benefits in QSAR without
compromising proprietary information", J. Chem. Inf. Model.; SparseChem's trunk/head split) and
the "personalization layers" of FedPer (Arivazhagan et al. 2019).

:class:`PrivateHeadTrainer` wraps a trainer of the whole network. It *is* a
:class:`~fedpharma.models.base.Trainer` whose parameters are the trunk only: the coordinator's
global model, every task and every update hold ``trunk.*`` names and nothing else, so no code
path can send the head. The head lives in the wrapper's memory; :meth:`fit` trains trunk and head
together (FedAvg's ClientUpdate on this partner's masked multitask loss) and keeps the new head.

The head starts at this partner's own label statistics (regression: mean and spread; classification:
positive rate; :func:`~fedpharma.models.output.calibrate_output_layer`) — computed and used
locally, so nothing is released. A site restarted mid-run starts its head afresh from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters
from fedpharma.models.base import FitOutput, Trainer
from fedpharma.models.output import HEAD_BIAS, HEAD_WEIGHT, calibrate_output_layer, has_head

if TYPE_CHECKING:
    from fedpharma.core.dataset import Dataset

HEAD_PREFIX = "head."


def split_head(params: Parameters) -> tuple[Parameters, Parameters]:
    """(trunk, head) of a whole network's parameters, by name.

    A network without a ``head`` layer is refused (a :class:`ConfigError`): else its output
    layer would be federated under a recipe that promised to keep it at the site."""
    named = params.to_dict()
    trunk = [n for n in params.names if not n.startswith(HEAD_PREFIX)]
    head = [n for n in params.names if n.startswith(HEAD_PREFIX)]
    if not trunk:
        raise ConfigError(
            [
                '[model] private_heads needs a shared trunk; kind = "linear" has none '
                '(use kind = "mlp" with at least one hidden layer)'
            ]
        )
    if not has_head(params):
        raise ConfigError(
            [
                "[model] private_heads keeps the network's per-task output layer at the site, "
                f"found by name: this network has no layer named `head` ({HEAD_WEIGHT} and "
                f"{HEAD_BIAS}); name its output layer `head` or set private_heads = false"
            ]
        )
    return (
        Parameters(tuple(trunk), tuple(named[n] for n in trunk)),
        Parameters(tuple(head), tuple(named[n] for n in head)),
    )


def join_head(trunk: Parameters, head: Parameters) -> Parameters:
    """A whole network's parameters from its trunk and head."""
    return Parameters(trunk.names + head.names, trunk.arrays + head.arrays)


class PrivateHeadTrainer:
    """A :class:`Trainer` over the trunk only; this site's head stays in memory here.

    ``network`` trains and applies the whole network (e.g. a
    :class:`~fedpharma.models.trainer.TorchTrainer` with this site's number of tasks);
    ``seed`` initialises the head, ``calibrate`` starts it at the site's own label statistics
    on the first :meth:`fit`.
    """

    def __init__(self, network: Trainer, task: str, *, seed: int, calibrate: bool = True) -> None:
        self.network = network
        self.task = task
        self.calibrate = calibrate
        self._head = split_head(network.initial_parameters(seed))[1]
        self._fitted = False

    @property
    def head(self) -> Parameters:
        """This site's current head (for local use and tests; never sent)."""
        return self._head

    def restore_head(self, head: Parameters) -> None:
        """Put back a head this trainer had (model selection keeps the best round's head)."""
        head.check_matches(self._head, "head")
        self._head = head

    def initial_parameters(self, seed: int) -> Parameters:
        """The initial *trunk*: what the coordinator starts the federation from."""
        return split_head(self.network.initial_parameters(seed))[0]

    def fit(
        self, params: Parameters, data: Dataset, *, epochs: int, seed: int, proximal_mu: float = 0.0
    ) -> FitOutput:
        """Train trunk ``params`` and this site's head together; return the trunk, keep the head.

        FedProx's proximal term (``proximal_mu``) also pulls the head toward its previous value,
        which only regularises this site's own personalisation.
        """
        if not self._fitted and self.calibrate:
            self._head = self._calibrated_head(params, data.dense_labels())
        self._fitted = True
        out = self.network.fit(
            join_head(params, self._head), data, epochs=epochs, seed=seed, proximal_mu=proximal_mu
        )
        trunk, self._head = split_head(out.parameters)
        return FitOutput(trunk, out.n_examples, out.train_loss, out.seconds)

    def predict(self, params: Parameters, data: Dataset) -> npt.NDArray[np.float32]:
        """Predictions of the federated trunk ``params`` with this site's head."""
        return self.network.predict(join_head(params, self._head), data)

    def _calibrated_head(self, trunk: Parameters, labels: npt.NDArray[np.floating]) -> Parameters:
        observed = np.isfinite(labels)
        counts = observed.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, np.nansum(labels, axis=0) / counts, np.nan)
            spread = np.sqrt(np.nansum((labels - mean) ** 2, axis=0) / counts)
        whole = calibrate_output_layer(join_head(trunk, self._head), self.task, mean, spread)
        return split_head(whole)[1]
