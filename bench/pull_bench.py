#!/usr/bin/env python3
"""Pull benchmark: the shared workload's main image (base + sitepkgs + mod,
475 MB of tars, gzipped by skopeo on push) from a local docker-registry on
127.0.0.1, cold, onto one fresh loop-mounted ext4, in one run:

  strata        strata image pull (overlay2)
  podman        podman pull (overlay storage)
  ctr-overlayfs ctr images pull (containerd 1.6, its overlayfs snapshotter)
  ctr-strata    ctr images pull --snapshotter strata (containerd unpacking
                into strata-snapshotter, overlay2)
  curl+tar      curl of every layer blob to /dev/null, then tar -xzf of the
                same blobs into an empty directory, back to back

Then prepare+mount of a container snapshot on the 65-layer `deep` image,
through containerd, on strata-snapshotter and on containerd's overlayfs,
and on that same overlayfs snapshotter served as a proxy plugin
(bench/go/overlayproxy), which pays the gRPC hop strata-snapshotter pays.

Tools run in turn each round (A B C D E, A B C D E, ...); set-up and
tear-down (fresh roots, removing images) are not timed. Medians are
reported, with strata's peak RSS (/usr/bin/time). Needs root, the release
binaries (cargo build --release -p strata-cli -p strata-snapshotter), the
workload (../shared/bench/make-workload.sh), docker-registry, skopeo,
podman, containerd, curl.

  bench/pull_bench.py [--workload DIR] [--runs N] [--json FILE] [--prepare-only]
"""
import argparse, hashlib, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(REPO, "target", "release")
# prepare+mount on the 65-layer image: strata-snapshotter, containerd's
# overlayfs in process, and the same overlayfs as a proxy plugin
PM_SNAPSHOTTERS = ["strata", "overlayfs", "overlayproxy"]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def quiet(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def timed(cmd, env=None):
    """Wall seconds and peak RSS (KiB) of cmd (a list), via /usr/bin/time."""
    out = tempfile.NamedTemporaryFile(delete=False)
    out.close()
    t0 = time.monotonic()
    subprocess.run(["/usr/bin/time", "-o", out.name, "-f", "%M"] + cmd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall = time.monotonic() - t0
    rss = int(open(out.name).read().split()[-1])
    os.unlink(out.name)
    return wall, rss


def mount_compacted(cmdline):
    """Run `ctr snapshots mounts`'s mount command the way containerd's
    mount code does: a lowerdir list too long for one page is made relative
    to its common directory, and the mount runs there."""
    words = cmdline.split()
    opts = words[words.index("-o") + 1]
    parts = opts.split(",")
    low = [p for p in parts if p.startswith("lowerdir=")]
    cwd = None
    if low and len(opts) > 4096 - 512:
        dirs = low[0][len("lowerdir="):].split(":")
        common = os.path.dirname(os.path.commonprefix(dirs).rstrip("/") + "x")
        common = os.path.dirname(common) if not os.path.isdir(common) else common
        cwd = common
        rel = [os.path.relpath(d, common) for d in dirs]
        parts = [("lowerdir=" + ":".join(rel)) if p.startswith("lowerdir=") else p for p in parts]
        words[words.index("-o") + 1] = ",".join(parts)
    subprocess.run(words, check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait(pred, what, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    sys.exit(f"{what} did not come up")


class Bench:
    def __init__(self, workload, runs, prepare_only=False):
        self.workload, self.runs, self.prepare_only = workload, runs, prepare_only
        self.w = tempfile.mkdtemp(prefix="strata-pullbench.", dir="/var/tmp")
        self.m = os.path.join(self.w, "mnt")
        self.procs = []
        self.results = {}
        self.run_existed = os.path.exists("/run/containerd")

    # ------------------------------------------------------------ set-up
    def setup(self):
        img = os.path.join(self.w, "fs.img")
        sh(["truncate", "-s", "24G", img])
        quiet(["mkfs.ext4", "-q", "-F", img])
        os.makedirs(self.m)
        sh(["mount", "-o", "loop", img, self.m])
        reg = os.path.join(self.w, "registry")
        os.makedirs(reg)
        sh(["mount", "-t", "tmpfs", "-o", "size=3g", "tmpfs", reg])
        self.port = free_port()
        conf = os.path.join(self.w, "registry.yml")
        open(conf, "w").write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {reg}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{self.port}\n")
        self.spawn(["docker-registry", "serve", conf], "registry.log")
        wait(lambda: self.connects(self.port), "docker-registry")
        self.reg = reg
        policy = os.path.join(self.w, "policy.json")
        open(policy, "w").write('{"default":[{"type":"insecureAcceptAnything"}]}')
        for name in ["main", "deep"]:
            print(f"pushing {name} (skopeo gzips the layers) ...", flush=True)
            quiet(["skopeo", "--policy", policy, "copy", "--dest-tls-verify=false",
                   f"oci:{self.workload}/oci:{name}", f"docker://127.0.0.1:{self.port}/bench/{name}:1"])
        self.ref = f"127.0.0.1:{self.port}/bench/main:1"
        self.deep = f"127.0.0.1:{self.port}/bench/deep:1"
        self.start_containerd()

    def connects(self, port):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    def spawn(self, cmd, log):
        f = open(os.path.join(self.w, log), "w")
        p = subprocess.Popen(cmd, stdout=f, stderr=f, start_new_session=True)
        self.procs.append(p)
        return p

    def start_containerd(self):
        c = os.path.join(self.m, "containerd")
        os.makedirs(os.path.join(c, "opt"))
        self.sock = os.path.join(self.w, "containerd.sock")
        ssock = os.path.join(self.w, "strata.sock")
        # SNAPSHOTTER_WRAP="strace -f -c -o FILE" (say) profiles the daemon
        wrap = os.environ.get("SNAPSHOTTER_WRAP", "").split()
        self.spawn(wrap + [os.path.join(REL, "strata-snapshotter"), "--root", os.path.join(self.m, "snapshotter"),
                    "--driver", "overlay2", "--address", ssock], "snapshotter.log")
        wait(lambda: os.path.exists(ssock), "strata-snapshotter")
        osock = os.path.join(self.w, "overlayproxy.sock")
        self.spawn([self.go_build("overlayproxy"), os.path.join(self.m, "overlayproxy"), osock], "overlayproxy.log")
        wait(lambda: os.path.exists(osock), "overlayproxy")
        conf = os.path.join(self.w, "containerd.toml")
        open(conf, "w").write(f'''version = 2
root = "{c}/root"
state = "{self.w}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"
[proxy_plugins.strata]
  type = "snapshot"
  address = "{ssock}"
[proxy_plugins.overlayproxy]
  type = "snapshot"
  address = "{osock}"
''')
        self.spawn(["containerd", "--config", conf], "containerd.log")
        wait(lambda: os.path.exists(self.sock), "containerd")

    def go_build(self, name):
        """Build bench/go/NAME offline (Debian's Go sources); its path."""
        exe = os.path.join(self.w, name)
        env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=os.path.join(self.w, "gocache"))
        sh(["go", "build", "-o", exe, "."], cwd=os.path.join(REPO, "bench", "go", name), env=env)
        return exe

    def ctr(self, ns, *args, check=True):
        return subprocess.run(["ctr", "--address", self.sock, "--namespace", ns] + list(args), check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # ------------------------------------------------------------ the tools
    def run_strata(self, i):
        root = os.path.join(self.m, f"strata-{i}")
        r = timed([os.path.join(REL, "strata"), "--root", root, "--driver", "overlay2", "pull", self.ref])
        quiet([os.path.join(REL, "strata"), "--root", root, "--driver", "overlay2", "driver", "cleanup"])
        shutil.rmtree(root)
        return r

    def run_podman(self, i):
        root, run = os.path.join(self.m, f"podman-{i}"), os.path.join(self.w, f"podrun-{i}")
        base = ["podman", "--root", root, "--runroot", run, "--storage-driver", "overlay"]
        r = timed(base + ["pull", "--tls-verify=false", self.ref])
        quiet(base + ["system", "reset", "--force"])
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
        return r

    def run_ctr(self, i, snapshotter):
        ns = f"bench-{snapshotter}-{i}"
        r = timed(["ctr", "--address", self.sock, "--namespace", ns, "images", "pull", "--plain-http",
                   "--snapshotter", snapshotter, self.ref])
        self.ctr(ns, "images", "rm", "--sync", self.ref)
        return r

    def blobs(self, ref):
        """Layer blob files of `ref` in the registry's storage, bottom first."""
        m = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                      check=True, stdout=subprocess.PIPE).stdout)
        out = []
        for l in m["layers"]:
            h = l["digest"].split(":")[1]
            out.append((l["digest"], os.path.join(self.reg, "docker/registry/v2/blobs/sha256", h[:2], h, "data")))
        return out

    def run_baseline(self, i):
        url = f"http://127.0.0.1:{self.port}/v2/bench/main/blobs/"
        blobs = self.blobs(self.ref)
        t0 = time.monotonic()
        for d, _ in blobs:
            quiet(["curl", "-sf", "-o", "/dev/null", url + d])
        t1 = time.monotonic()
        dst = os.path.join(self.m, f"tar-{i}")
        os.makedirs(dst)
        for _, f in blobs:
            quiet(["tar", "-xzf", f, "-C", dst])
        t2 = time.monotonic()
        shutil.rmtree(dst)
        return t2 - t0, 0, t1 - t0, t2 - t1

    # ------------------------------------------------------------ 65 layers
    def deep_chain(self):
        idx = json.load(open(os.path.join(self.workload, "oci/index.json")))
        md = [m for m in idx["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "deep"][0]
        blob = lambda d: open(os.path.join(self.workload, "oci/blobs/sha256", d.split(":")[1]), "rb").read()
        cfg = json.loads(blob(json.loads(blob(md["digest"]))["config"]["digest"]))
        chain = None
        for d in cfg["rootfs"]["diff_ids"]:
            chain = d if chain is None else "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
        return chain

    def prepare_mount(self, snapshotter, ns, chain, k):
        key = f"pm-{k}"
        target = os.path.join(self.w, f"pm-{snapshotter}")
        os.makedirs(target, exist_ok=True)
        t0 = time.monotonic()
        self.ctr(ns, "snapshots", "--snapshotter", snapshotter, "prepare", key, chain)
        m = self.ctr(ns, "snapshots", "--snapshotter", snapshotter, "mounts", target, key).stdout
        mount_compacted(m)
        wall = time.monotonic() - t0
        quiet(["umount", target])
        self.ctr(ns, "snapshots", "--snapshotter", snapshotter, "rm", key)
        return wall

    # ------------------------------------------------------------ run
    def run(self):
        tools = {
            "strata": self.run_strata,
            "podman": self.run_podman,
            "ctr-overlayfs": lambda i: self.run_ctr(i, "overlayfs"),
            "ctr-strata": lambda i: self.run_ctr(i, "strata"),
            "curl+tar": self.run_baseline,
        }
        raw = {t: [] for t in tools}
        if self.prepare_only:
            self.prepare_mount_all()
            return
        for i in range(self.runs):
            for t, f in tools.items():
                r = f(i)
                raw[t].append(r)
                print(f"round {i + 1} {t:<14} {r[0]:7.2f} s" + (f"  peak {r[1] / 1024:.0f} MiB" if r[1] else ""), flush=True)
        med = {t: statistics.median(x[0] for x in v) for t, v in raw.items()}
        self.results["pull_seconds"] = med
        self.results["strata_peak_rss_mib"] = max(x[1] for x in raw["strata"]) / 1024
        self.results["curl_seconds"] = statistics.median(x[2] for x in raw["curl+tar"])
        self.results["tar_seconds"] = statistics.median(x[3] for x in raw["curl+tar"])
        self.prepare_mount_all()
        r = self.results
        ps = r["pull_seconds"]
        r["ratios"] = {
            "strata / podman": ps["strata"] / ps["podman"],
            "strata / ctr-overlayfs": ps["strata"] / ps["ctr-overlayfs"],
            "strata / (curl + tar -xzf)": ps["strata"] / ps["curl+tar"],
            "ctr-strata / ctr-overlayfs": ps["ctr-strata"] / ps["ctr-overlayfs"],
        }

    def prepare_mount_all(self):
        chain = self.deep_chain()
        pm = {}
        for s in PM_SNAPSHOTTERS:
            ns = f"deep-{s}"
            self.ctr(ns, "images", "pull", "--plain-http", "--snapshotter", s, self.deep)
            pm[s] = []
        for k in range(max(10, self.runs * 3)):
            for s in PM_SNAPSHOTTERS:
                pm[s].append(self.prepare_mount(s, f"deep-{s}", chain, k))
        self.results["prepare_mount_65_seconds"] = {s: statistics.median(v) for s, v in pm.items()}
        self.prepare_mount_client(chain)
        for s in PM_SNAPSHOTTERS:
            self.ctr(f"deep-{s}", "images", "rm", "--sync", self.deep)
        pm = self.results["prepare_mount_65_seconds"]
        self.results["prepare+mount 65 layers: strata / overlayfs"] = pm["strata"] / pm["overlayfs"]
        self.results["prepare+mount 65 layers: strata / overlayproxy"] = pm["strata"] / pm["overlayproxy"]

    def prepare_mount_client(self, chain):
        """The same from one long-lived client (bench/go/prepmount): no ctr
        process start in the figures, so the snapshotters' own cost shows."""
        exe = self.go_build("prepmount")
        target = os.path.join(self.w, "pm-client")
        out = subprocess.run([exe, self.sock, target, chain, str(max(101, self.runs * 20 + 1)),
                             ] + [f"{s}=deep-{s}" for s in PM_SNAPSHOTTERS],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"prepmount failed: {out.stderr.strip()}")
        print(out.stderr, end="", flush=True)
        out = out.stdout
        us = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in out.splitlines()}
        self.results["prepare_mount_65_client_us (median, p25, p75)"] = us
        self.results["prepare+mount 65 layers, one client: strata / overlayfs"] = us["strata"][0] / us["overlayfs"][0]
        self.results["prepare+mount 65 layers, one client: strata / overlayproxy"] = us["strata"][0] / us["overlayproxy"][0]
        self.results["prepare+mount 65 layers, one client: overlayproxy / overlayfs"] = us["overlayproxy"][0] / us["overlayfs"][0]

    def teardown(self):
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
            except Exception:
                os.killpg(p.pid, signal.SIGKILL)
        for d in [os.path.join(self.w, x) for x in os.listdir(self.w) if x.startswith("pm-")]:
            subprocess.run(["umount", d], stderr=subprocess.DEVNULL)
        subprocess.run(["umount", "-R", self.m], stderr=subprocess.DEVNULL)
        subprocess.run(["umount", os.path.join(self.w, "registry")], stderr=subprocess.DEVNULL)
        if not self.run_existed:
            shutil.rmtree("/run/containerd", ignore_errors=True)
        shutil.rmtree(self.w, ignore_errors=True)


def main():
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--workload", default="/var/tmp/strata-bench")
    a.add_argument("--runs", type=int, default=3)
    a.add_argument("--json")
    a.add_argument("--prepare-only", action="store_true", help="only the prepare+mount part (no pulls)")
    o = a.parse_args()
    b = Bench(o.workload, o.runs, o.prepare_only)
    try:
        b.setup()
        b.run()
    finally:
        b.teardown()
    r = b.results
    print(json.dumps(r, indent=2))
    if o.json:
        json.dump(r, open(o.json, "w"), indent=2)


if __name__ == "__main__":
    main()
