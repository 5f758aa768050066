"""The query API (v1): documents, routes, the OpenAPI document and the web overview."""
