"""Developer tools: the embedded broker, the GPS simulator and process helpers (not used in
production serving)."""
