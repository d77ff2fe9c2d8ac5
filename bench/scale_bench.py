#!/usr/bin/env python3
"""Scale benchmark: the cost of each store command on roots that hold 10,
1,000 and 10,000 images and containers, in one run.

Each root sits on a fresh loop-mounted ext4 and holds N two-layer images
(one shared base layer, one small layer of their own, loaded from one OCI
layout by a single `image load`) and one container per image. Then each
command below runs --runs times on that root, each in a process of its own
(as a user runs it), and the median wall time is reported:

  per item  image load of one more image (sharing the base), image inspect,
            image rm, container create, container mount (+ umount),
            container rm
  listings  image ls, ps -a, df, check

Per-item commands run on items of their own (fresh images, fresh container
names), so the root keeps its N images and containers. The root is synced
once built, so that the figures are the steady state rather than the
write-back of the build. Building the 10,000
root is not timed (~3 min: the containers are made by 10,000 `container
create` processes, two at a time).

Needs root and the release binary (cargo build --release -p strata-cli).

  bench/scale_bench.py [--sizes 10,1000,10000] [--driver vfs] [--runs 5] [--json FILE]
"""
import argparse, concurrent.futures, hashlib, io, json, os, statistics, subprocess, sys, tarfile, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(REPO, "target", "release", "strata")


def sh(cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def layer_tar(files):
    """An uncompressed layer tar of {path: bytes}, fixed times and owners."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs = sorted({os.path.dirname(p) for p in files if os.path.dirname(p)})
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1704067200
            t.addfile(ti)
        for p, data in sorted(files.items()):
            ti = tarfile.TarInfo(p)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1704067200
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


class Layout:
    """An OCI image layout being written: blobs, and one manifest per image."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.manifests = []

    def blob(self, data):
        d = hashlib.sha256(data).hexdigest()
        p = os.path.join(self.path, "blobs", "sha256", d)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        return {"digest": "sha256:" + d, "size": len(data)}

    def image(self, name, layers):
        descs = [dict(self.blob(l), mediaType="application/vnd.oci.image.layer.v1.tar") for l in layers]
        cfg = {
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "scale_bench"} for _ in descs],
        }
        man = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": dict(self.blob(json.dumps(cfg).encode()), mediaType="application/vnd.oci.image.config.v1+json"),
            "layers": descs,
        }
        m = dict(self.blob(json.dumps(man).encode()), mediaType="application/vnd.oci.image.manifest.v1+json")
        m["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.manifests.append(m)

    def close(self):
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.manifests}, f)


BASE = layer_tar({f"usr/share/base/file{i:02}": b"base %d\n" % i * 64 for i in range(20)})


def own_layer(tag):
    return layer_tar({f"app/{tag}": f"image {tag}\n".encode()})


class Root:
    def __init__(self, work, n, driver):
        self.n, self.driver = n, driver
        self.img = os.path.join(work, f"{n}.img")
        self.mnt = os.path.join(work, f"m{n}")
        self.root = os.path.join(self.mnt, "root")
        self.work = work

    def __enter__(self):
        os.makedirs(self.mnt)
        sh(["truncate", "-s", "16G", self.img])
        sh(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-N", "2000000", self.img])
        sh(["mount", "-o", "loop", self.img, self.mnt])
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", "-R", self.mnt], stderr=subprocess.DEVNULL)
        os.rmdir(self.mnt)
        os.unlink(self.img)

    def cmd(self, *args):
        return [STRATA, "--root", self.root, "--driver", self.driver, *args]

    def run(self, *args):
        return subprocess.run(self.cmd(*args), check=True, capture_output=True, text=True).stdout

    def build(self):
        lay = Layout(os.path.join(self.work, f"layout{self.n}"))
        for i in range(self.n):
            lay.image(f"localhost/scale/img{i}:latest", [BASE, own_layer(f"img{i}")])
        lay.close()
        self.run("image", "load", "-q", "-i", lay.path)
        subprocess.run(["rm", "-rf", lay.path], check=True)

        def create(i):
            self.run("container", "create", f"c{i}", f"localhost/scale/img{i}")

        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            list(ex.map(create, range(self.n)))

    def extra_layouts(self, runs):
        """One single-image layout per run, for `image load` of one more."""
        paths = []
        for k in range(runs):
            lay = Layout(os.path.join(self.work, f"extra{self.n}-{k}"))
            lay.image(f"localhost/scale/extra{k}:latest", [BASE, own_layer(f"extra{k}")])
            lay.close()
            paths.append(lay.path)
        return paths


def timed(argv):
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"scale_bench: {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return wall


def measure(root, runs):
    """Median seconds per command on a built root."""
    t = {k: [] for k in ["image load (one more)", "image inspect", "image rm", "container create",
                         "container mount", "container rm", "image ls", "ps -a", "df", "check"]}
    mid = root.n // 2
    layouts = root.extra_layouts(runs)
    # per-item commands in one loop, listings in another: right after a
    # full-store listing (check reads every layer's metadata) the next
    # write is slower for a moment, which is the listing's wake, not the
    # item's cost (see BENCHMARKS.md)
    for k in range(runs):
        t["image load (one more)"].append(timed(root.cmd("image", "load", "-q", "-i", layouts[k])))
        t["image inspect"].append(timed(root.cmd("image", "inspect", f"localhost/scale/img{mid}")))
        t["container create"].append(timed(root.cmd("container", "create", f"x{k}", f"localhost/scale/extra{k}")))
        t["container mount"].append(timed(root.cmd("container", "mount", f"x{k}")))
        root.run("container", "unmount", f"x{k}")
        t["container rm"].append(timed(root.cmd("container", "rm", f"x{k}")))
        t["image rm"].append(timed(root.cmd("image", "rm", f"localhost/scale/extra{k}")))
    for k in range(runs):
        t["image ls"].append(timed(root.cmd("image", "ls")))
        t["ps -a"].append(timed(root.cmd("ps", "-a")))
        t["df"].append(timed(root.cmd("system", "df")))
        t["check"].append(timed(root.cmd("check")))
    for p in layouts:
        subprocess.run(["rm", "-rf", p], check=True)
    return {k: statistics.median(v) for k, v in t.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,1000,10000")
    ap.add_argument("--driver", default="vfs")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("scale_bench: needs root (loop-mounted file systems)")
    if not os.access(STRATA, os.X_OK):
        sys.exit(f"scale_bench: {STRATA} missing: cargo build --release -p strata-cli")
    sizes = [int(s) for s in a.sizes.split(",")]
    res, build = {}, {}
    with tempfile.TemporaryDirectory(prefix="strata-scale-", dir="/var/tmp") as work:
        for n in sizes:
            with Root(work, n, a.driver) as root:
                t0 = time.monotonic()
                root.build()
                build[n] = time.monotonic() - t0
                # steady state: not the write-back of 20,000 new layers,
                # which every fsync of the first commands would wait for
                os.sync()
                time.sleep(2)
                print(f"N={n}: root built in {build[n]:.1f} s", flush=True)
                res[n] = measure(root, a.runs)
    lo, hi = sizes[0], sizes[-1]
    print(f"\n| command | " + " | ".join(f"N = {n:,}" for n in sizes) + f" | growth {lo:,} -> {hi:,} |")
    print("|---|" + "---|" * len(sizes) + "---|")
    for cmd in res[lo]:
        cells = " | ".join(f"{res[n][cmd] * 1000:.0f} ms" for n in sizes)
        print(f"| {cmd} | {cells} | {res[hi][cmd] / res[lo][cmd]:.2f}x |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"driver": a.driver, "runs": a.runs, "build_seconds": build, "median_seconds": res}, f, indent=1)


if __name__ == "__main__":
    main()
