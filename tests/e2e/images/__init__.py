"""Local OCI images for the e2e rig (built from hack/build-binaries.sh output)."""
