"""The `fedpharma` command."""
