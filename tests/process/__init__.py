"""Process tests: a real `widget-store serve` in a subprocess, killed and restarted."""
