"""The workspace: the folder, its SQLite store, atomic file writes."""
