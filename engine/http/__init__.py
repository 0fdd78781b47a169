"""The HTTP client: request heads and response framers (http1), one keep-alive
connection per VU (client), the VUs and their connections (pool), request
bodies (payload)."""
