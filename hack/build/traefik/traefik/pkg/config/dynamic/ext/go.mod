// Stand-in for Traefik's unpublished nested module pkg/config/dynamic/ext (see ../go.mod).
module github.com/traefik/traefik/dynamic/ext

go 1.24.0
