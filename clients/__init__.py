"""Everything users touch: the CLI, JSONL and tracklists, the websocket server and overlay,
the live view."""
