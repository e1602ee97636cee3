"""The report's jinja2 templates (``templates/``): one autoescaping environment, built on first
use, so ``import fedpharma.report`` does not load jinja2.

Every value a template prints is escaped unless it is the output of another template of this
environment (returned as ``Markup``), so a site name or title never becomes markup.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from fedpharma.report.formatting import (
    MISSING,
    MODEL_LABELS,
    direction_text,
    format_count,
    format_epsilon,
    format_parameter,
    format_score,
    metric_label,
)

if TYPE_CHECKING:
    import jinja2


def render(template: str, **context: Any) -> str:
    """``template`` rendered with ``context``; the result is safe to embed in another page."""
    import markupsafe

    return markupsafe.Markup(_environment().get_template(template).render(**context))


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fedpharma.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        {
            f.__name__: f
            for f in (
                format_score,
                format_count,
                format_epsilon,
                format_parameter,
                metric_label,
                direction_text,
            )
        }
    )
    env.globals.update(MISSING=MISSING, MODEL_LABELS=MODEL_LABELS)
    return env
