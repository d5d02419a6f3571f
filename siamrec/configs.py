"""Where siamrec's own configuration lives (the `conf/` folder: one YAML per component)."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
