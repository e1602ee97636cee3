"""SCAFFOLD's control variates on the wire, named once for both ends (Karimireddy et al. 2020).

A train task whose :class:`~fedpharma.core.protocol.settings.LocalTraining` has ``scaffold`` set
carries the server's control variate c beside the model, as extra named arrays of the task's
parameters (each model name behind :data:`CONTROL_PREFIX`); the site answers with Δy_i and Δc_i
under the same names. So the variate deltas travel, are validated and are averaged exactly like
the model delta — in the clear or in the same secure sum (one vector for the quantizer).
"""

from __future__ import annotations

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters

CONTROL_PREFIX = "scaffold.control:"


def attach_control(model: Parameters, control: Parameters) -> Parameters:
    """``model`` followed by ``control`` (same names and shapes), the latter behind the prefix."""
    if not control.same_structure(model):
        raise ValueError("a control variate has the model's names and shapes")
    names = tuple(CONTROL_PREFIX + name for name in control.names)
    return Parameters(model.names + names, model.arrays + control.arrays)


def split_control(parameters: Parameters) -> tuple[Parameters, Parameters]:
    """(model, control) of parameters made by :func:`attach_control`; a :class:`ProtocolError`
    where the control part is missing or does not mirror the model."""
    model = [i for i, n in enumerate(parameters.names) if not n.startswith(CONTROL_PREFIX)]
    control = [i for i, n in enumerate(parameters.names) if n.startswith(CONTROL_PREFIX)]
    names = tuple(parameters.names[i] for i in model)
    control_names = tuple(parameters.names[i].removeprefix(CONTROL_PREFIX) for i in control)
    arrays, control_arrays = (
        tuple(parameters.arrays[i] for i in model),
        tuple(parameters.arrays[i] for i in control),
    )
    if control_names != names or tuple(a.shape for a in arrays) != tuple(
        a.shape for a in control_arrays
    ):
        raise ProtocolError(
            "a SCAFFOLD task carries one control variate per model parameter "
            f"({CONTROL_PREFIX}NAME, same shape); these parameters do not"
        )
    return Parameters(names, arrays), Parameters(names, control_arrays)
