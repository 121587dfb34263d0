"""Development-only tools: local PostgreSQL and Redis, and `manage.py runportal`; not shipped."""
