module k8s-on-k8s/hack/build/pause

go 1.26
