"""Integration tests: the store in process (FastAPI TestClient) on SQLite and PostgreSQL."""
