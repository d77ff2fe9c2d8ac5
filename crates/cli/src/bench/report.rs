//! The figures, for people (a table) and as ratios to the plain tools.

use super::Record;

/// The figures as a table for people.
pub fn table(records: &[Record]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<15} {:<13} {:<58} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8}  {}\n",
        "TARGET",
        "GROUP",
        "OPERATION",
        "MEDIAN s",
        "MIN s",
        "MAX s",
        "MB/s",
        "entries/s",
        "RSS MB",
        "NOTE"
    ));
    for r in records {
        let mbps = if r.bytes > 0 && r.median > 0.0 {
            format!("{:.1}", r.bytes as f64 / 1e6 / r.median)
        } else {
            "-".into()
        };
        let eps = if r.entries > 0 && r.median > 0.0 {
            format!("{:.0}", r.entries as f64 / r.median)
        } else {
            "-".into()
        };
        let rss = if r.peak_rss_kb > 0 {
            format!("{:.1}", r.peak_rss_kb as f64 / 1024.0)
        } else {
            "-".into()
        };
        let fmt = |v: f64| {
            if r.seconds.is_empty() {
                "-".to_string()
            } else {
                format!("{v:.4}")
            }
        };
        s.push_str(&format!(
            "{:<15} {:<13} {:<58} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8}  {}\n",
            r.target,
            r.group,
            r.op,
            fmt(r.median),
            fmt(r.min),
            fmt(r.max),
            mbps,
            eps,
            rss,
            r.note
        ));
    }
    s
}

/// Ratios against the reference tools, per target.
pub fn ratios(records: &[Record]) -> Vec<(String, String, f64)> {
    let find = |t: &str, op: &str| {
        records
            .iter()
            .find(|r| r.target == t && r.op == op)
            .map(|r| r.median)
    };
    let mut out = Vec::new();
    let targets: Vec<String> = {
        let mut v: Vec<String> = records.iter().map(|r| r.target.clone()).collect();
        v.dedup();
        v
    };
    for t in targets {
        if let (Some(a), Some(b)) = (
            find(&t, "apply whole image (plain)"),
            find(&t, "reference: tar -x whole image"),
        ) {
            out.push((t.clone(), "apply whole image / tar -x".into(), a / b));
        }
        if let (Some(a), Some(b)) = (
            find(&t, "create child of the image"),
            find(&t, "reference: cp -a of the image tree"),
        ) {
            out.push((t.clone(), "create child / cp -a".into(), a / b));
        }
        if let (Some(a), Some(b)) = (
            find(&t, "create rw + mount"),
            find(&t, "reference: mount -t overlay (same stack)"),
        ) {
            out.push((
                t.clone(),
                "create rw + mount / mount -t overlay".into(),
                a / b,
            ));
        }
    }
    out
}
