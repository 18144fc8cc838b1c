"""`python -m firmware_sim` is `edge-sim`."""

from __future__ import annotations

from firmware_sim.cli import main

raise SystemExit(main())
