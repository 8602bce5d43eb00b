"""trustpull's HTTP layer: one public HTTPS session and the rooms it is built from.

| module | what | I/O |
|---|---|---|
| `challenge` | `WWW-Authenticate` parser (`Challenge`, `parse_challenges`) | none |
| `tls` | the `SSLContext`: system roots + `$DOCKER_CONFIG/tls/<host:port>/` | reads files |
| `watchdog` | a per-attempt wall-clock deadline that cuts sockets; the requests adapter | sockets |
| `auth` | realm policy, token answers, the token store between runs | token files |
| `reasons` | connection failures in words (and the raw detail for -v) | none |
| `body` | a body read within a byte cap and a deadline (bounded gzip decoding) | sockets |
| `session` | `HttpsSession`: bounded GET, caps, deadlines, retries, redirects, auth | network |

Users: `trust.notary.remote.NotaryRemote` (the Notary server's metadata API) and
`trust.tufsource.TrustpullFetcher` (python-tuf's `FetcherInterface`). Nothing outside this
package uses a name that starts with `_` inside it.
"""

from trust.http.auth import RealmPolicy, TokenStore
from trust.http.challenge import Challenge, parse_challenges
from trust.http.session import Auth, Credentials, HttpsSession, Reply
from trust.http.tls import ca_directory, tls_context

__all__ = [
    "Auth",
    "Challenge",
    "Credentials",
    "HttpsSession",
    "RealmPolicy",
    "Reply",
    "TokenStore",
    "ca_directory",
    "parse_challenges",
    "tls_context",
]
