"""One module per CLI command, each a pure function `command(cfg, run_dir)`."""
