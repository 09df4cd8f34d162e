"""The workqueue program's components, one per concern, and its settings."""
