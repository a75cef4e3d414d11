"""Problems more than one study trains on: image classifiers (images) and cells that are
real `adamlab train` runs (training)."""
