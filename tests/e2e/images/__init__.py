"""Local images for the e2e rig, written by crane from hack/build-binaries.sh output."""
