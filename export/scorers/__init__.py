"""The trainer side of scorer kinds added through the contract: one module per kind with its
fit, its calibration and its options (see `export.scorers.base`; found by
`export.scorers.registry`). `edge-train fit --scorer KIND` adds one to a bundle."""
