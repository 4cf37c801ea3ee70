//go:build tools

// Package tools imports the command we build so `go mod tidy` keeps its dependencies.
package tools

import _ "sigs.k8s.io/kube-network-policies/cmd"
