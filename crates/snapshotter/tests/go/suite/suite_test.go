// containerd's own snapshotter test suite (snapshots/testsuite, containerd
// 1.6) run against strata-snapshotter through containerd's gRPC proxy
// client (snapshots/proxy), with one strata-snapshotter process and a fresh
// root per test. Built offline from Debian's packages:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go test -c
//
// and run by crates/snapshotter/tests/containerd_suite.rs, which sets
// STRATA_SNAPSHOTTER (the binary), STRATA_DRIVER and TMPDIR (a file system
// the driver works on).
package suite

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func TestSnapshotterSuite(t *testing.T) {
	bin := os.Getenv("STRATA_SNAPSHOTTER")
	driver := os.Getenv("STRATA_DRIVER")
	if bin == "" || driver == "" {
		t.Fatal("STRATA_SNAPSHOTTER and STRATA_DRIVER must be set")
	}
	testsuite.SnapshotterSuite(t, "Strata-"+driver, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return start(bin, driver, root)
	})
}

// start runs one strata-snapshotter on a root inside the suite's root (the
// suite makes its root 0777; Strata refuses roots others can write) and
// connects containerd's proxy client to it.
func start(bin, driver, root string) (snapshots.Snapshotter, func() error, error) {
	sock := filepath.Join(filepath.Dir(root), "strata.sock")
	cmd := exec.Command(bin, "--root", filepath.Join(root, "strata"), "--driver", driver, "--address", sock)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("strata-snapshotter exited badly after SIGTERM: %w", err)
			}
			if _, err := os.Stat(sock); err == nil {
				return fmt.Errorf("strata-snapshotter left its socket %s", sock)
			}
			return nil
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("strata-snapshotter did not stop within 30s of SIGTERM")
		}
	}
	// wait for the socket (grpc's own retries back off by a second)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("strata-snapshotter exited before serving: %v", err)
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, "unix://"+sock, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		_ = stop()
		return nil, nil, fmt.Errorf("connecting to strata-snapshotter on %s: %w", sock, err)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "strata")
	cleanup := func() error {
		_ = conn.Close()
		return stop()
	}
	return sn, cleanup, nil
}
