// Traefik's go.mod replaces github.com/abbot/go-http-auth by a fork the Go module proxy
// does not serve. hack/lib/build.sh builds Traefik against the upstream release instead,
// with this file added to it: the two functions Traefik's auth middlewares call that only
// the fork has. (CloudDeck uses neither middleware; they must only compile and behave.)

package auth

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// CheckSecret reports whether password matches secret, a hash in any format
// BasicAuth.CheckAuth accepts (MD5 crypt, {SHA}, bcrypt).
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

// RequireAuthStale is RequireAuth telling the client that its nonce was stale, so that it
// retries with the new one without asking the user again (RFC 7616, section 3.3).
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	nonce := RandomKey()
	a.clients[nonce] = &digest_client{nc: 0, last_seen: time.Now().UnixNano()}
	w.Header().Set(contentType, a.Headers.V().UnauthContentType)
	w.Header().Set(a.Headers.V().Authenticate,
		fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm="MD5", qop="auth", stale=true`,
			a.Realm, nonce, a.Opaque))
	w.WriteHeader(a.Headers.V().UnauthCode)
	_, _ = w.Write([]byte(a.Headers.V().UnauthResponse))
}
