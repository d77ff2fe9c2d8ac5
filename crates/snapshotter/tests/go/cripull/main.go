// cripull pulls an image the way Kubernetes' CRI plugin does: in
// namespace k8s.io, unpacked into a snapshotter, with the layer
// annotations that become the containerd.io/snapshot/cri.* snapshot
// labels (pkg/snapshotters.AppendInfoHandlerWrapper, as the CRI plugin's
// image pull sets them). Plain HTTP: the test registry is on loopback.
//
//	cripull CONTAINERD_SOCKET SNAPSHOTTER REF
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/snapshotters"
	"github.com/containerd/containerd/remotes/docker"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: cripull CONTAINERD_SOCKET SNAPSHOTTER REF")
		os.Exit(2)
	}
	addr, snapshotter, ref := os.Args[1], os.Args[2], os.Args[3]
	client, err := containerd.New(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	resolver := docker.NewResolver(docker.ResolverOptions{PlainHTTP: true})
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithMaxConcurrentDownloads(3),
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pull:", err)
		os.Exit(1)
	}
	fmt.Println(img.Target().Digest)
}
