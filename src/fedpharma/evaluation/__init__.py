"""Evaluation: metrics for sparse multitask predictions (never imports torch)."""

from fedpharma.evaluation.metrics import PRIMARY_METRIC, compute_metrics, per_task_metrics

__all__ = ["PRIMARY_METRIC", "compute_metrics", "per_task_metrics"]
