"""A trained model leaves the run: export as a bundle (:mod:`.export`), load and predict
(:mod:`.predict`). Composition layer: reads the run store, a site's kept model, RDKit and torch."""
