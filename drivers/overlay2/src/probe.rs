//! What this kernel can do, measured once per kernel release and mount
//! API and cached in `ROOT/overlay2/.probe.json`: which mount API to use
//! and the deepest stack one mount accepts.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_core::error::IoContext;
use strata_core::state::{DriverState, remove_plain_dir};
use strata_core::{Error, Result, fsx, mounts};

use crate::links::LINK_DIR;
use crate::mount;
use crate::plan::{Api, Lower, MountPlan};

/// What the first open of a root measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Probe {
    pub kernel: String,
    pub api: Api,
    pub max_depth: usize,
}

pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// The API `overlay2.mount_api` asks for (`auto`, `new`, `legacy`).
fn choose_api(opt: &str, new_ok: bool) -> Result<Api> {
    match opt {
        "auto" if new_ok => Ok(Api::New),
        "auto" | "legacy" => Ok(Api::Legacy),
        "new" if new_ok => Ok(Api::New),
        "new" => Err(Error::unsupported(
            "overlay2.mount_api=new",
            "this kernel lacks fsopen/fsconfig lowerdir+ for overlay",
        )),
        other => Err(Error::invalid(
            format!("driver option overlay2.mount_api={other}"),
            "expected auto, new or legacy",
        )),
    }
}

/// Pick the mount API and measure the deepest stack it mounts (from the
/// cache when this kernel and API were measured before).
#[allow(clippy::disallowed_methods)] // the cache is a driver file, not layer content
pub fn probe(st: &DriverState, api_opt: &str) -> Result<Probe> {
    let path = st.home.join(".probe.json");
    let kernel = kernel_release();
    let held = st.new_temp("probe")?;
    let scratch = held.path.clone();
    fsx::mkdir_p(&scratch, 0o700).ctx("create", &scratch)?;
    let api = choose_api(api_opt, mount::new_api_available(&scratch));
    let cached = std::fs::read(&path)
        .ok()
        .and_then(|d| serde_json::from_slice::<Probe>(&d).ok());
    let r = match (api, cached) {
        (Err(e), _) => Err(e),
        (Ok(api), Some(p)) if p.kernel == kernel && p.api == api => Ok((p, false)),
        (Ok(api), _) => measure_depth(st, &scratch, api).map(|max_depth| {
            let p = Probe {
                kernel,
                api,
                max_depth,
            };
            (p, true)
        }),
    };
    let _ = mounts::unmount_all_under(&scratch);
    let _ = remove_plain_dir(&scratch);
    let (p, measured) = r?;
    if measured {
        let data =
            serde_json::to_vec_pretty(&p).map_err(|e| Error::invalid("probe", e.to_string()))?;
        fsx::write_atomic(&path, &data).ctx("write", &path)?;
        tracing::info!(?p, "overlay2: probed the kernel");
    }
    Ok(p)
}

/// The stack limit of current kernels (`OVL_MAX_STACK`): tried first, so
/// that a usual kernel is measured with two mounts.
const USUAL_MAX: usize = 500;

/// Measure the most lower layers one mount accepts: `USUAL_MAX` and one
/// more first, else a binary search. Lower directories are made only as
/// far as a try needs them.
#[allow(clippy::disallowed_methods)] // short links are driver files, not layer content
fn measure_depth(st: &DriverState, scratch: &Path, api: Api) -> Result<usize> {
    const CEILING: usize = 1024;
    let target = scratch.join("m");
    fsx::mkdir_p(&target, 0o700).ctx("create", &target)?;
    let mut lowers: Vec<Lower> = Vec::with_capacity(CEILING);
    let mut links = Vec::new();
    let mut try_n = |n: usize| -> Result<bool> {
        while lowers.len() < n {
            let i = lowers.len();
            let d = scratch.join(format!("{i}"));
            fsx::mkdir_p(&d, 0o755).ctx("create", &d)?;
            let link = if api == Api::Legacy {
                // realistic option lengths: links like the real ones
                let l = st.home.join(LINK_DIR).join(format!("PROBE{i:021}"));
                let _ = std::fs::remove_file(&l);
                std::os::unix::fs::symlink(&d, &l).ctx("symlink", &l)?;
                links.push(l.clone());
                l
            } else {
                d.clone()
            };
            lowers.push(Lower { diff: d, link });
        }
        let plan = MountPlan::Overlay {
            lowers: lowers[..n].to_vec(),
            upper: None,
            target: target.clone(),
        };
        let ok = mount::execute(&plan, api, &st.home).is_ok();
        if ok {
            let _ = mounts::unmount_path(&target);
        }
        Ok(ok)
    };
    let r = (|| {
        if !try_n(2)? {
            return Err(Error::unsupported(
                "overlay2",
                "the kernel refuses an overlay of two lower directories here",
            ));
        }
        let usual = try_n(USUAL_MAX)?;
        if usual && !try_n(USUAL_MAX + 1)? {
            return Ok(USUAL_MAX);
        }
        let (mut lo, mut hi) = if usual {
            (USUAL_MAX + 1, CEILING + 1)
        } else {
            (2, USUAL_MAX)
        };
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if try_n(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    })();
    for l in links {
        let _ = std::fs::remove_file(l);
    }
    r
}
