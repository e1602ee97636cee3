"""Experiment tracking: observers that stream a run to a tracker (:mod:`.mlflow`, optional extra
``fedpharma[mlflow]``). Nothing here is imported by ``import fedpharma``."""
