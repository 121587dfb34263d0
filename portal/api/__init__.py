"""The customer API (`/api/v1/`): what a tenant's own backend uses, with an API key.

Django REST framework for authentication, throttling, parsing and the OpenAPI schema
(drf-spectacular); the domain stays in connections and graphsync. Every lookup goes through the
key's tenant, so another tenant's id answers exactly like an unknown one. Errors are RFC 9457
problem documents (portal.api.problems).
"""
