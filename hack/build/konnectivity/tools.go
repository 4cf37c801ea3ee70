//go:build tools

// Package tools imports the commands we build so `go mod tidy` keeps their dependencies.
package tools

import (
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/agent"
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/server"
)
