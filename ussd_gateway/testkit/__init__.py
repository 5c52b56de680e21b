"""The testers' toolkit: transcripts and their replay, the terminal phone, load runs,
the SMSC simulator, a test billing server and a throw-away redis-server. The server
never imports it; the CLI reaches it for the testers' commands."""
