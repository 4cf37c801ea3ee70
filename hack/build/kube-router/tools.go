//go:build tools

// Package tools keeps the dependencies of the built command in go.mod (never compiled).
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
