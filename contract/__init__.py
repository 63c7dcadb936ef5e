"""Storage rows to wire shapes (REST bodies and socket payloads), and the request rules REST and the socket share."""
