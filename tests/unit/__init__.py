"""Unit tests: no database, no server; each takes milliseconds."""
