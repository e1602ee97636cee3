"""Data layer: molecules (RDKit), tabular CSV, partitioning for simulation, bundled datasets."""
