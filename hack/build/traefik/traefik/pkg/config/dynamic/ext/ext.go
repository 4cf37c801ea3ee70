// Package ext holds the extension points of Traefik's dynamic configuration. Upstream they are
// empty structs embedded in dynamic.HTTPConfiguration and dynamic.Router; so are they here.
package ext

// HTTP is embedded in dynamic.HTTPConfiguration.
type HTTP struct{}

// Router is embedded in dynamic.Router.
type Router struct{}
