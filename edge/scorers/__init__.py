"""Scorer kinds: one module each (see `edge.scorers.base` for the contract and
`edge.scorers.registry` for how they are found)."""
