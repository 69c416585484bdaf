"""Lightning callbacks that know about generator steps."""
