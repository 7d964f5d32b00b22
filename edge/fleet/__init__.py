"""The GPU nodes: the routing table, node records, boot requests, and the client to them."""
