"""Dataset versions: `snapshot` freezes the curated examples into an immutable, content-hashed
version; `exports` writes a version's splits for training; `job` runs a snapshot as a job."""
