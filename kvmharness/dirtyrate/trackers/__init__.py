"""The trackers behind the engine, one per mode, with one small interface:
begin / poll / end / count / close."""
