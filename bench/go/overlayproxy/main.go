// overlayproxy serves containerd's own overlayfs snapshotter (the code of
// snapshots/overlay that containerd 1.6 runs in process, with the options
// of its plugin) over gRPC, as a proxy plugin, the way strata-snapshotter
// is served. bench/pull_bench.py runs it beside both so that the
// prepare+mount figures separate the cost of the proxy hop (paid by any
// external snapshotter) from the cost of the snapshotter. Built offline:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build
//
//	overlayproxy ROOT SOCKET
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: overlayproxy ROOT SOCKET")
		os.Exit(2)
	}
	root, sock := os.Args[1], os.Args[2]
	sn, err := overlay.NewSnapshotter(root, overlay.AsynchronousRemove)
	check("overlay snapshotter", err)
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	check("listen", err)
	check("chmod", os.Chmod(sock, 0o600))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Stop()
	}()
	check("serve", srv.Serve(l))
	check("close", sn.Close())
}

func check(what string, err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "overlayproxy:", what+":", err)
		os.Exit(1)
	}
}
