"""Data: sources (demo, folder, csv, features) → Library → splits; audio decoding."""
