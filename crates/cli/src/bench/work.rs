//! Inputs the groups make: many-file layers, a small change in a view,
//! compressed copies of the workload's tars.

use std::path::Path;

use anyhow::{Result, bail};

/// A layer of `n` small files in directories of 1,000.
pub fn many_files(n: usize) -> Vec<u8> {
    use strata_conformance::layer::{dir, file};
    let mut v = Vec::with_capacity(n + n / 1000 + 1);
    for i in 0..n {
        if i % 1000 == 0 {
            v.push(dir(format!("d{:03}", i / 1000)));
        }
        v.push(file(
            format!("d{:03}/f{i}", i / 1000),
            format!("file {i}\n"),
        ));
    }
    strata_conformance::layer::tar(&v)
}

/// 1 modified, 1 added, 1 deleted file inside a mounted view.
pub fn small_change(view: &Path) -> Result<()> {
    // modify and delete the first two regular files found under the biggest
    // directories, add one next to them
    let mut files = Vec::new();
    let mut stack = vec![view.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut ents: Vec<_> = std::fs::read_dir(&d)?.filter_map(|e| e.ok()).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && files.len() < 2 {
                files.push(e.path());
            }
        }
        if files.len() >= 2 {
            break;
        }
    }
    if files.len() < 2 {
        bail!("the image has fewer than two files");
    }
    let mut content = std::fs::read(&files[0])?;
    content.extend_from_slice(b"\n# changed by the bench\n");
    std::fs::write(&files[0], content)?;
    std::fs::remove_file(&files[1])?;
    let parent = files[0].parent().unwrap_or(view);
    std::fs::write(parent.join("added-by-bench"), "new\n")?;
    Ok(())
}

/// Compress `src` into `dst` (`gzip` or `zstd`).
pub fn compress(src: &Path, dst: &Path, kind: &str) -> Result<()> {
    let mut input = std::io::BufReader::new(std::fs::File::open(src)?);
    let out = std::fs::File::create(dst)?;
    match kind {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(out),
                flate2::Compression::default(),
            );
            std::io::copy(&mut input, &mut e)?;
            e.finish()?;
        }
        _ => {
            let mut e = zstd::stream::write::Encoder::new(std::io::BufWriter::new(out), 3)?;
            std::io::copy(&mut input, &mut e)?;
            e.finish()?;
        }
    }
    Ok(())
}
