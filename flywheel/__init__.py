"""Flywheel's core and serving layer: projects, keys, documents, index and model versions,
retrieval, generation, and the interaction log."""
