// Command acmesolver answers one ACME HTTP-01 challenge: cert-manager runs it in a pod
// behind the HTTPRoute it makes for the challenge (the gatewayHTTPRoute solver), with the
// arguments cert-manager's own acmesolver image takes. That image cannot be pulled here
// and its command is a module the Go module proxy does not serve, so this main on
// cert-manager's public solver package stands in for it (hack/lib/build.sh builds it;
// hack/lib/certmanager.sh puts it in an image in the local registry).
//
// Usage: acmesolver --listen-port PORT --domain NAME --token TOKEN --key KEY
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cert-manager/cert-manager/pkg/issuer/acme/http/solver"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

func main() {
	s := &solver.HTTP01Solver{}
	flag.IntVar(&s.ListenPort, "listen-port", 8089, "port to answer the challenge on")
	flag.StringVar(&s.Domain, "domain", "", "the domain name being verified")
	flag.StringVar(&s.Token, "token", "", "the challenge token")
	flag.StringVar(&s.Key, "key", "", "the challenge key")
	flag.Parse()
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
	if err := s.Listen(logr.Logger(log)); err != nil {
		fmt.Fprintln(os.Stderr, "acmesolver:", err)
		os.Exit(1)
	}
}
