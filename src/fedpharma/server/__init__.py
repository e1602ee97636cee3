"""The coordinator's side: run store (SQLite), checkpoints; later audit log and resume."""
