//go:build tools

// Package tools imports the command we build so `go mod tidy` keeps its dependencies, and the
// package whose Version the build stamps with -ldflags -X.
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
	_ "github.com/pulumi/pulumi/sdk/v3/go/common/version"
)
