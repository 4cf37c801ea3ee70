// Laid over github.com/abbot/go-http-auth v0.4.0 by hack/build-binaries.sh. Traefik builds
// with a fork (github.com/containous/go-http-auth) that the Go module proxy refuses; these are
// the two functions of the fork that Traefik calls and v0.4.0 lacks, written on v0.4.0's
// own helpers. The rig configures no basic or digest auth middleware.

package auth

import (
	"net/http"
	"strings"
)

// CheckSecret reports whether password matches secret, an htpasswd hash (MD5-crypt, {SHA} or
// bcrypt), comparing the way BasicAuth.CheckAuth does.
func CheckSecret(password, secret string) bool {
	compare := compareFuncs[0].compare
	for _, candidate := range compareFuncs[1:] {
		if strings.HasPrefix(secret, candidate.prefix) {
			compare = candidate.compare
			break
		}
	}
	return compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale answers with a fresh digest challenge. v0.4.0 cannot set the fork's
// stale=true flag, so a client whose nonce expired asks its user again; unused by the rig.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	a.RequireAuth(w, r)
}
