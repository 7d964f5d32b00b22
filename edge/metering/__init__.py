"""One metered call: what a request asks for, the node's stream, and the counting of tokens."""
