"""A deployed tabular site's rows before and after the consortium's fitted preprocessing.

A site holding a clinical CSV keeps its rows raw (missing values as NaN, original units) until
the coordinator sends the fit it made from every site's sums
(:class:`~fedpharma.core.protocol.PreprocessingTask`); the site checks it against its own
declared schema, applies it to its train, validation and test rows and rebuilds its trainers for
the new input width (and, in a regression, for the fit's target standardization: training on
standardized labels, predictions and metrics in label units). Until then it refuses to train
or evaluate: a model on raw rows would not be the consortium's. Feature statistics, label
statistics and data checks always read the raw rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fedpharma.core.dataset import Dataset, SiteData, TargetScaling, dense
from fedpharma.core.errors import DataError
from fedpharma.data.federated_preprocessing import FittedPreprocessing
from fedpharma.data.tabular import TabularSchema

Rebuild = Callable[[SiteData, TargetScaling | None], None]
"""Give the runtime its transformed data and trainers of the matching width (and, for
regression, the fit's standardization of the targets)."""


class TabularPreparation:
    """The raw rows, the declared schema and, once received, the applied fit."""

    def __init__(self, raw: SiteData, schema: TabularSchema, rebuild: Rebuild) -> None:
        self.raw = raw
        self.schema = schema
        self.rebuild = rebuild
        self.applied: FittedPreprocessing | None = None

    def apply(self, fit: str) -> FittedPreprocessing:
        """Check the received ``fit`` against the schema and apply it to the raw rows (again
        from the raw rows if a fit was applied before: a resumed run sends it again)."""
        fitted = FittedPreprocessing.from_json(fit, self.schema)

        def transform(data: Dataset) -> Dataset:
            return dataclasses.replace(
                data,
                features=fitted.transform(dense(data.features)),
                feature_names=fitted.output_names,
            )

        raw = self.raw
        validation = None if raw.validation is None else transform(raw.validation)
        prepared = SiteData(transform(raw.train), transform(raw.test), validation)
        self.rebuild(prepared, fitted.target_scaling)
        self.applied = fitted
        return fitted

    def require_applied(self) -> None:
        if self.applied is None:
            raise DataError(
                "this site has not received the consortium's fitted preprocessing (it joined "
                "after the fit was made, or the fit failed); it trains and evaluates only on "
                "rows prepared like every other site's: restart the run with this site present"
            )
