// prepmount times prepare + mounts + mount of a container snapshot through
// containerd (its Snapshots service, as a runtime calls it), for two
// snapshotters in turn, from one long-lived client: no ctr process start
// in the figures. Used by bench/pull_bench.py; built offline:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build
//
//	prepmount SOCKET TARGET_DIR PARENT ROUNDS SNAPSHOTTER=NAMESPACE...
//
// Prints one line per snapshotter: "NAME median_us p25_us p75_us".
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/leases"
	leasesproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

type target struct {
	name, ns string
	sn       snapshots.Snapshotter
	ctx      context.Context // its namespace and a lease (else containerd's GC may take the snapshot)
	times    []time.Duration
	parts    [3][]time.Duration // prepare, mounts, mount
}

func main() {
	if len(os.Args) < 6 {
		fmt.Fprintln(os.Stderr, "usage: prepmount SOCKET TARGET_DIR PARENT ROUNDS SNAPSHOTTER=NAMESPACE...")
		os.Exit(2)
	}
	sock, dir, parent := os.Args[1], os.Args[2], os.Args[3]
	rounds, err := strconv.Atoi(os.Args[4])
	check("rounds", err)
	conn, err := grpc.Dial("unix://"+sock, grpc.WithInsecure())
	check("dial", err)
	defer conn.Close()
	lm := leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn))
	var ts []*target
	for _, a := range os.Args[5:] {
		p := strings.SplitN(a, "=", 2)
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), p[0])
		ctx := namespaces.WithNamespace(context.Background(), p[1])
		l, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
		check("lease", err)
		defer lm.Delete(ctx, l, leases.SynchronousDelete)
		ts = append(ts, &target{name: p[0], ns: p[1], sn: sn, ctx: leases.WithLease(ctx, l.ID)})
	}
	for k := 0; k < rounds; k++ {
		for _, t := range ts {
			d := once(t, dir, parent, k)
			if k > 0 { // the first round warms up
				t.times = append(t.times, d[0]+d[1]+d[2])
				for i := range d {
					t.parts[i] = append(t.parts[i], d[i])
				}
			}
		}
	}
	for _, t := range ts {
		sort.Slice(t.times, func(i, j int) bool { return t.times[i] < t.times[j] })
		n := len(t.times)
		fmt.Printf("%s %d %d %d\n", t.name, t.times[n/2].Microseconds(), t.times[n/4].Microseconds(), t.times[3*n/4].Microseconds())
		for i, what := range []string{"prepare", "mounts", "mount"} {
			p := t.parts[i]
			sort.Slice(p, func(a, b int) bool { return p[a] < p[b] })
			fmt.Fprintf(os.Stderr, "%s %s median %d us\n", t.name, what, p[len(p)/2].Microseconds())
		}
	}
}

// once: prepare, mounts, mount (timed, each); unmount and remove (not
// timed).
func once(t *target, dir, parent string, k int) [3]time.Duration {
	ctx := t.ctx
	key := fmt.Sprintf("prepmount-%d", k)
	mp := dir + "/" + t.name
	check("mkdir", os.MkdirAll(mp, 0o755))
	t0 := time.Now()
	_, err := t.sn.Prepare(ctx, key, parent)
	check(t.name, "prepare", err)
	t1 := time.Now()
	ms, err := t.sn.Mounts(ctx, key)
	check(t.name, "mounts", err)
	t2 := time.Now()
	check(t.name, "mount", mount.All(ms, mp))
	d := [3]time.Duration{t1.Sub(t0), t2.Sub(t1), time.Since(t2)}
	check(t.name, "unmount", mount.UnmountAll(mp, 0))
	check(t.name, "remove", t.sn.Remove(ctx, key))
	return d
}

func check(what ...interface{}) {
	if err := what[len(what)-1]; err != nil {
		fmt.Fprintln(os.Stderr, append([]interface{}{"prepmount:"}, what...)...)
		os.Exit(1)
	}
}
