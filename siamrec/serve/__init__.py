"""The local web app of `python -m siamrec serve run=RUN` (optional extra: pip install -e ".[serve]")."""
