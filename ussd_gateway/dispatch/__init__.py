"""The dispatcher: one hop at a time per dialogue, replay of a repeated hop, the
hop deadline, and the two store round trips around one engine step."""
