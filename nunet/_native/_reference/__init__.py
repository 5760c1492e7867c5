"""Pure-Python twins of the native modules: the readable specification and the fallback."""
