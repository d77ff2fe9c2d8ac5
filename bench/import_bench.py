#!/usr/bin/env python3
"""Import benchmark: `strata image load` of the shared workload's images
against GNU tar extracting the same layers, on the same fresh loop-mounted
file system, in one run.

  main          base + sitepkgs + mod (uncompressed layers, OCI layout)
  main (gzip)   the same layers gzip-compressed, as registries serve them,
                against `tar -xzf` of the same blobs
  deep          base + 64 tiny layers (65 layers)

For each case and run: a fresh root (set up untimed: its first open
checks the file system and probes the kernel, ~30 ms) or an empty
directory for tar on the file system, caches dropped first (`echo 3 > drop_caches`), then the
timed command; strata and tar alternate. Backends: overlay2 on ext4,
btrfs on btrfs. Medians are reported, and the ratio strata / tar; also
each command followed by `sync -f` of the file system (the time until
what it wrote is on disk), and that ratio.

Loop devices (--loop): "buffered" is what `mount -o loop` makes: the
loop device writes into its backing file's page cache, so a cache flush
from the file system (btrfs ends every commit with one, and a snapshot
or read-only flag commits) becomes an fsync of the whole backing file.
"direct-io" (`losetup --direct-io=on`) writes through to the disk as a
real block device does, so a flush drains only what is still in flight.

Needs root, the release binary (cargo build --release -p strata-cli), the
workload (../shared/bench/make-workload.sh), GNU tar, gzip.

  bench/import_bench.py [--workload DIR] [--runs N] [--drivers overlay2,btrfs]
                        [--loop buffered,direct-io] [--json FILE]
"""
import argparse, gzip, hashlib, json, os, statistics, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(REPO, "target", "release", "strata")
FS = {"overlay2": "ext4", "btrfs": "btrfs"}


def sh(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def image_layers(oci, name):
    """The layer blob paths of image `name` in an OCI layout."""
    idx = json.load(open(os.path.join(oci, "index.json")))
    m = [d for d in idx["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == name][0]
    blob = lambda d: os.path.join(oci, "blobs", "sha256", d.split(":")[1])
    man = json.load(open(blob(m["digest"])))
    return [blob(l["digest"]) for l in man["layers"]], m, man


def gzip_layout(src, dst, name):
    """An OCI layout of image `name` with its layers gzip-compressed."""
    os.makedirs(os.path.join(dst, "blobs", "sha256"))
    put = lambda data: (lambda d: (open(os.path.join(dst, "blobs", "sha256", d), "wb").write(data), "sha256:" + d)[1])(hashlib.sha256(data).hexdigest())
    layers, desc, man = image_layers(src, name)
    new_layers = []
    for p, l in zip(layers, man["layers"]):
        gz = gzip.compress(open(p, "rb").read(), compresslevel=6, mtime=0)
        new_layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
    cfg = open(os.path.join(src, "blobs", "sha256", man["config"]["digest"].split(":")[1]), "rb").read()
    put(cfg)
    man = dict(man, layers=new_layers)
    mdata = json.dumps(man).encode()
    d = dict(desc, digest=put(mdata), size=len(mdata))
    json.dump({"schemaVersion": 2, "manifests": [d]}, open(os.path.join(dst, "index.json"), "w"))
    open(os.path.join(dst, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    return [os.path.join(dst, "blobs", "sha256", l["digest"].split(":")[1]) for l in new_layers]


def one_image_layout(src, dst, name):
    """An OCI layout holding only image `name` (blobs hard-linked)."""
    os.makedirs(os.path.join(dst, "blobs", "sha256"))
    layers, desc, man = image_layers(src, name)
    for d in [desc["digest"], man["config"]["digest"]] + [l["digest"] for l in man["layers"]]:
        h = d.split(":")[1]
        os.link(os.path.join(src, "blobs", "sha256", h), os.path.join(dst, "blobs", "sha256", h))
    json.dump({"schemaVersion": 2, "manifests": [desc]}, open(os.path.join(dst, "index.json"), "w"))
    open(os.path.join(dst, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    return layers


def timed(cmd, fs, cwd=None):
    """Wall time of `cmd`, and of the `sync -f` of its file system that
    follows: what the command left unwritten (tar leaves every byte it
    wrote dirty in the page cache; a btrfs snapshot or read-only flag
    first writes the subvolume's data out)."""
    subprocess.run(["sync"], check=True)
    open("/proc/sys/vm/drop_caches", "w").write("3\n")
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"import_bench: {' '.join(cmd)} failed: {r.stderr.strip()}")
    t1 = time.monotonic()
    subprocess.run(["sync", "-f", fs], check=True)
    return wall, time.monotonic() - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="/var/tmp/strata-bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--drivers", default="overlay2,btrfs")
    ap.add_argument("--loop", default="buffered,direct-io",
                    help="loop device modes, comma-separated: buffered, direct-io")
    ap.add_argument("--json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("import_bench: needs root")
    oci = os.path.join(a.workload, "oci")
    results = {}
    with tempfile.TemporaryDirectory(prefix="strata-import-", dir="/var/tmp") as w:
        cases = {}
        layers = one_image_layout(oci, os.path.join(w, "main"), "main")
        cases["main"] = (os.path.join(w, "main"), [["tar", "--xattrs", "-xpf", p] for p in layers])
        gz = gzip_layout(oci, os.path.join(w, "main-gz"), "main")
        cases["main (gzip)"] = (os.path.join(w, "main-gz"), [["tar", "--xattrs", "-xpzf", p] for p in gz])
        layers = one_image_layout(oci, os.path.join(w, "deep"), "deep")
        cases["deep (65 layers)"] = (os.path.join(w, "deep"), [["tar", "--xattrs", "-xpf", p] for p in layers])
        for drv, loop in [(d, l) for d in a.drivers.split(",") for l in a.loop.split(",")]:
            if loop not in ("buffered", "direct-io"):
                sys.exit(f"import_bench: --loop {loop!r}: expected buffered or direct-io")
            img = os.path.join(w, f"{drv}-{loop}.img")
            mnt = os.path.join(w, f"m-{drv}-{loop}")
            os.makedirs(mnt)
            sh(["truncate", "-s", "24G", img])
            if FS[drv] == "ext4":
                sh(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", img])
            else:
                sh(["mkfs.btrfs", "-q", "-f", img])
            dio = "on" if loop == "direct-io" else "off"
            dev = subprocess.run(["losetup", "-f", "--show", f"--direct-io={dio}", img],
                                 check=True, capture_output=True, text=True).stdout.strip()
            try:
                sh(["mount", dev, mnt])
                for ci, (case, (layout, tars)) in enumerate(cases.items()):
                    s_t, t_t = [], []
                    for k in range(a.runs):
                        # fresh places each time; kept until the file
                        # system goes (no delete-then-recreate in the run)
                        tag = f"{ci}-{k}"
                        root = os.path.join(mnt, f"root-{tag}")
                        # the root is set up untimed, as tar's directory is
                        # made untimed: the first open of a root checks the
                        # file system and probes the kernel once
                        sh([STRATA, "--root", root, "--driver", drv, "image", "ls"])
                        s_t.append(timed([STRATA, "--root", root, "--driver", drv, "image", "load", "-q", "-i", layout], mnt))
                        d = os.path.join(mnt, f"tar-{tag}")
                        os.makedirs(d)
                        # tar extracts the layers one after the other into one tree
                        script = " && ".join(" ".join(c) for c in tars)
                        t_t.append(timed(["sh", "-c", script], mnt, cwd=d))
                    s = statistics.median(w for w, _ in s_t)
                    t = statistics.median(w for w, _ in t_t)
                    sd = statistics.median(w + y for w, y in s_t)
                    td = statistics.median(w + y for w, y in t_t)
                    results[f"{drv} ({loop} loop): {case}"] = {"strata_s": s, "tar_s": t, "ratio": s / t,
                                                 "strata_synced_s": sd, "tar_synced_s": td, "synced_ratio": sd / td}
                    print(f"{drv:9} {loop:9} {case:17} strata {s:6.2f} s   tar {t:6.2f} s   ratio {s / t:.2f}"
                          f"   | with sync -f after: strata {sd:6.2f} s   tar {td:6.2f} s   ratio {sd / td:.2f}", flush=True)
            finally:
                subprocess.run(["umount", "-R", mnt], stderr=subprocess.DEVNULL)
                subprocess.run(["losetup", "-d", dev])
                # each file system holds ~10 GB of layers by its end: free
                # it before the next one, or the host disk can fill, and a
                # full host disk is an I/O error inside the loop file system
                os.unlink(img)
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
