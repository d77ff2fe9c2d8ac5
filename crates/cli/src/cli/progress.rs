//! Progress of loads and pulls, like `docker pull`: a bar per layer on a
//! terminal, plain lines otherwise (scripts, logs).

use std::collections::HashMap;

use strata_store::import::Event;

use super::safe;
use super::table::human_size;

/// Prints import events.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    multi: indicatif::MultiProgress,
    bars: HashMap<String, indicatif::ProgressBar>,
    /// Print only the image IDs.
    quiet: bool,
}

impl Progress {
    /// A progress printer for standard output.
    pub fn new(quiet: bool) -> Progress {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stdout().is_terminal(),
            multi: indicatif::MultiProgress::new(),
            bars: HashMap::new(),
            quiet,
        }
    }

    /// One event.
    pub fn event(&mut self, e: Event) {
        if self.quiet {
            if let Event::Done { id, .. } = e {
                println!("{id}");
            }
            return;
        }
        match e {
            Event::AlreadyExists { short } => self.line(&format!("{short}: Already exists")),
            Event::Layer { short, size } => self.start(short, size),
            Event::Progress { short, done, .. } => {
                if let Some(b) = self.bars.get(&short) {
                    b.set_position(done);
                }
            }
            Event::Complete { short } => {
                if let Some(b) = self.bars.remove(&short) {
                    b.finish_and_clear();
                }
                self.line(&format!("{short}: Pull complete"));
            }
            Event::Done { digest, id, tags } => {
                self.line(&format!("Digest: {digest}"));
                if tags.is_empty() {
                    self.line(&format!("Loaded image ID: {id}"));
                }
                for t in tags {
                    self.line(&format!("Loaded image: {}", safe(&t)));
                }
            }
        }
    }

    fn start(&mut self, short: String, size: u64) {
        if !self.tty {
            println!("{short}: Loading layer {}", human_size(size));
            return;
        }
        let b = self.multi.add(indicatif::ProgressBar::new(size));
        let style = indicatif::ProgressStyle::with_template(
            "{msg}: Loading [{wide_bar}] {bytes}/{total_bytes}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b.set_message(short.clone());
        self.bars.insert(short, b);
    }

    /// A line, above the bars on a terminal.
    pub fn line(&self, s: &str) {
        if self.tty {
            let _ = self.multi.println(s);
        } else {
            println!("{s}");
        }
    }
}
