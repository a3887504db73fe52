"""Settings modules: `development` (the default), `production` and `test`, all built on `base`."""
