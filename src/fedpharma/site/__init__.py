"""A site's runtime: its data, its trainer, its policy; it answers tasks."""
