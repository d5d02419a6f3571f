"""The shipped configs, installed as the package siamrec.conf (see pyproject.toml and siamrec/configs.py)."""
