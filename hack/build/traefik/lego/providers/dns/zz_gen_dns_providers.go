// Laid over github.com/go-acme/lego/v5 by hack/build-binaries.sh, in place of lego's generated
// file of the same name. That file imports all of lego's DNS-01 providers, and the Go module
// proxy refuses the modules of some of their SDKs ("403 This module version is not available"),
// so Traefik cannot be built with it. The rig uses no ACME certificate resolver; with this file a
// resolver that asks for a DNS challenge fails with the error below.

package dns

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName is the one function of this package that Traefik calls.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("DNS provider %q: this traefik is built without lego's DNS providers", name)
}
