"""What happened to a site's molecules on import, without revealing any structure or label.

A pharma site's structures are its crown jewels: the report names input rows and reasons only,
never a SMILES string, and counts labels without showing them. Rows are printed 1-based, as a
spreadsheet numbers data rows (the first row after the header is row 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DUPLICATE_POLICIES = ("keep", "mean", "first")
"""How rows holding the same standardized molecule are merged (``[dataset] duplicates``):
``keep`` all of them as separate rows, ``mean`` one row whose label per task is the mean of the
duplicates' observed values (regression), ``first`` only the first row."""


@dataclass(frozen=True)
class MoleculeReport:
    """Counts and rows of each import problem.

    ``invalid`` holds ``(row, reason)`` for every molecule that could not be used and
    ``unlabelled`` the rows of valid molecules dropped because every label was missing; both are
    0-based positions in the input (data row 1 is position 0). ``duplicates`` counts kept rows
    whose standardized molecule (canonical SMILES) occurred in an earlier kept row, merged by
    ``duplicate_policy``; ``salts_stripped`` counts valid molecules from which standardization
    removed fragments (counter-ions, solvents).
    """

    n_input: int
    n_valid: int
    invalid: tuple[tuple[int, str], ...]
    unlabelled: tuple[int, ...] = ()
    duplicates: int = 0
    duplicate_policy: str = "keep"
    salts_stripped: int = 0

    @property
    def n_kept(self) -> int:
        """Valid molecules with at least one label (before duplicates are merged)."""
        return self.n_valid - len(self.unlabelled)

    @property
    def n_rows(self) -> int:
        """Rows of the dataset: kept molecules, less the duplicates a merge removed."""
        merged = self.duplicates if self.duplicate_policy != "keep" else 0
        return self.n_kept - merged

    def invalid_by_reason(self) -> dict[str, list[int]]:
        """Reason → its 0-based input rows, in input order."""
        by_reason: dict[str, list[int]] = {}
        for row, reason in self.invalid:
            by_reason.setdefault(reason, []).append(row)
        return by_reason

    def summary(self, max_rows: int = 10) -> str:
        """One human-readable paragraph: counts, and the first (1-based) rows of each problem."""
        text = f"{self.n_input} rows read; {self.n_valid} of {self.n_input} molecules valid"
        if self.invalid:
            parts = [
                f"{len(rows)} {reason} (rows {_first_rows(rows, max_rows)})"
                for reason, rows in self.invalid_by_reason().items()
            ]
            text += f"; {len(self.invalid)} invalid: " + "; ".join(parts)
        if self.unlabelled:
            text += (
                f"; {len(self.unlabelled)} dropped with no label "
                f"(rows {_first_rows(self.unlabelled, max_rows)})"
            )
        if self.salts_stripped:
            text += f"; salts or solvents stripped from {self.salts_stripped}"
        if self.duplicates:
            action = {
                "keep": "kept as separate rows",
                "mean": "merged, labels averaged",
                "first": "merged, first row kept",
            }[self.duplicate_policy]
            text += f"; {self.duplicates} duplicate molecule(s) {action} (duplicates = "
            text += f'"{self.duplicate_policy}")'
        return text + f"; {self.n_rows} rows used"


def _first_rows(rows: Sequence[int], max_rows: int) -> str:
    shown = ", ".join(str(r + 1) for r in rows[:max_rows])
    return shown + (", …" if len(rows) > max_rows else "")
