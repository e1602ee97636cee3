"""fedpharma: privacy-preserving federated learning for drug development.

Importing the package is cheap: it never imports torch, rdkit, tenseal or grpc. Those load only
in the modules that need them (models, data.molecules, secure, transport).
"""

__version__ = "0.1.0"
