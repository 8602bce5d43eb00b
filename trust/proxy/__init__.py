"""`trustpull proxy`: a Docker Engine API proxy on a unix socket that enforces verified pulls.

A front end like cli/: it imports trust.* below it; nothing imports it except cli/proxy.py.
Layout: `framing` (strict HTTP/1.x heads both ways and bodies), `writer` (what the proxy
writes: answers and requests, framing chosen by the proxy), `routes` (the engine's
version prefixes, path decoding, route table, query parsing), `gojson` (Go's JSON decoding
rules), `verify` (the ONE call into verification), `upstream` (requests to the engine),
`handlers` (the per-endpoint decisions), `server` (listener, connections, tunnels), `log`.
"""
