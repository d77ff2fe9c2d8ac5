//! `strata pull`, `push`, `login`, `logout`: images from and to
//! registries, with `docker pull`'s output (bars on a terminal, status
//! lines otherwise).

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Args;
use strata_registry::creds::{self, Secret};
use strata_registry::{Client, ClientOpts, pull, push};
use strata_store::import::Platform;

use super::{Cli, Usage, safe};

/// Where plain HTTP is allowed besides loopback registries.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Allow plain HTTP (and no TLS) for REGISTRY (repeatable; also
    /// $STRATA_INSECURE_REGISTRIES, comma-separated)
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure: Vec<String>,
}

impl RegistryArgs {
    fn client(&self) -> Client {
        let mut insecure = self.insecure.clone();
        if let Ok(v) = std::env::var("STRATA_INSECURE_REGISTRIES") {
            insecure.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        Client::new(ClientOpts {
            insecure,
            auth_files: None,
        })
    }
}

/// `strata pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAME[:TAG] or NAME@DIGEST (`busybox` is docker.io/library/busybox:latest)
    pub reference: String,
    /// The platform to pull from a multi-platform image: os/arch[/variant]
    #[arg(long)]
    pub platform: Option<String>,
    /// Downloads at once
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_concurrent_downloads: usize,
    /// Print only the image's name
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `strata push`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image to push: NAME[:TAG] (its registry is the one it names)
    pub reference: String,
    /// Print only the digest
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `strata login`
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (default: docker.io)
    pub server: Option<String>,
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `strata logout`
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (default: docker.io)
    pub server: Option<String>,
}

/// Prints pull events like `docker pull`.
struct PullPrinter {
    tty: bool,
    quiet: bool,
    multi: indicatif::MultiProgress,
    bars: HashMap<String, indicatif::ProgressBar>,
}

impl PullPrinter {
    fn new(quiet: bool) -> Self {
        PullPrinter {
            tty: std::io::stdout().is_terminal(),
            quiet,
            multi: indicatif::MultiProgress::new(),
            bars: HashMap::new(),
        }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        if self.tty {
            let _ = self.multi.println(s);
        } else {
            println!("{s}");
        }
    }

    fn bar(&mut self, layer: &str, total: u64, what: &str, done: u64) {
        let b = self.bars.entry(layer.to_string()).or_insert_with(|| {
            let b = self.multi.add(indicatif::ProgressBar::new(total));
            let style = indicatif::ProgressStyle::with_template(
                "{prefix}: {msg:<12} [{wide_bar}] {bytes}/{total_bytes}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b.set_prefix(layer.to_string());
            b
        });
        b.set_length(total);
        b.set_message(what.to_string());
        b.set_position(done);
    }

    fn state(&mut self, layer: &str, what: &str) {
        if let Some(b) = self.bars.get(layer) {
            b.set_message(what.to_string());
        }
        if !self.tty {
            self.line(&format!("{layer}: {what}"));
        }
    }

    fn event(&mut self, e: pull::Event) {
        use pull::Event as E;
        match e {
            E::Pulling { repo, tag } => {
                self.line(&format!("{}: Pulling from {}", safe(&tag), safe(&repo)))
            }
            E::AlreadyExists(l) => self.line(&format!("{l}: Already exists")),
            E::PullingFsLayer(l) => self.state(&l, "Pulling fs layer"),
            E::Waiting(l) => self.state(&l, "Waiting"),
            E::Downloading { layer, done, total } if self.tty && !self.quiet => {
                self.bar(&layer, total, "Downloading", done)
            }
            E::Extracting { layer, done, total } if self.tty && !self.quiet => {
                self.bar(&layer, total, "Extracting", done)
            }
            E::Downloading { .. } | E::Extracting { .. } => {}
            E::Retrying { layer, secs } => self.state(
                &layer,
                &format!(
                    "Retrying in {secs} second{}",
                    if secs == 1 { "" } else { "s" }
                ),
            ),
            E::VerifyingChecksum(l) => self.state(&l, "Verifying Checksum"),
            E::DownloadComplete(l) => self.state(&l, "Download complete"),
            E::PullComplete(l) => {
                if let Some(b) = self.bars.remove(&l) {
                    b.finish_and_clear();
                }
                self.line(&format!("{l}: Pull complete"));
            }
            E::Digest(d) => self.line(&format!("Digest: {d}")),
            E::Status(s) => self.line(&format!("Status: {}", safe(&s))),
        }
    }
}

/// `strata pull`
pub fn pull(cli: &Cli, a: &PullArgs) -> Result<()> {
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    if a.max_concurrent_downloads == 0 {
        return Err(Usage("--max-concurrent-downloads must be at least 1".into()).into());
    }
    let store = cli.open_store()?;
    let client = a.registry.client();
    let printer = Mutex::new(PullPrinter::new(a.quiet));
    let opts = pull::PullOpts {
        platform,
        max_concurrent: a.max_concurrent_downloads,
    };
    let ev = |e: pull::Event| printer.lock().unwrap_or_else(|p| p.into_inner()).event(e);
    let p = pull::pull(&store, &client, &a.reference, &opts, &ev)?;
    tracing::info!(received = p.received, "pulled {}", a.reference);
    let named = strata_store::reference::parse_named(&a.reference)?;
    let full = format!(
        "{}/{}:{}",
        named.registry,
        named.repository,
        named.reference()
    )
    .replace(":sha256:", "@sha256:");
    println!("{}", safe(&full));
    Ok(())
}

/// `strata push`
pub fn push(cli: &Cli, a: &PushArgs) -> Result<()> {
    let store = cli.open_store()?;
    let client = a.registry.client();
    let quiet = a.quiet;
    let ev = |e: push::Event| {
        use push::Event as E;
        let line = match e {
            E::Refers(r) => format!("The push refers to repository [{}]", safe(&r)),
            E::Preparing(l) => format!("{l}: Preparing"),
            E::LayerAlreadyExists(l) => format!("{l}: Layer already exists"),
            E::MountedFrom { layer, repo } => format!("{layer}: Mounted from {}", safe(&repo)),
            E::Pushing { .. } => return,
            E::Pushed(l) => format!("{l}: Pushed"),
            E::Done { tag, digest, size } => {
                if quiet {
                    println!("{digest}");
                    return;
                }
                format!("{}: digest: {digest} size: {size}", safe(&tag))
            }
        };
        if !quiet {
            println!("{line}");
        }
    };
    push::push(&store, &client, &a.reference, None, &ev)?;
    Ok(())
}

fn server(s: &Option<String>) -> String {
    match s.as_deref() {
        None | Some("docker.io" | "index.docker.io" | "https://index.docker.io/v1/") => {
            "docker.io".into()
        }
        Some(s) => s
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
    }
}

/// `strata login`: check the credentials against the registry, then save
/// them (mode 0600) where `strata` finds them again.
pub fn login(a: &LoginArgs) -> Result<()> {
    let registry = server(&a.server);
    let username = match &a.username {
        Some(u) => u.clone(),
        None => return Err(Usage("--username is required (no interactive prompt)".into()).into()),
    };
    let password = match (&a.password, a.password_stdin) {
        (Some(_), true) => {
            return Err(Usage("--password and --password-stdin exclude each other".into()).into());
        }
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p.clone()
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from standard input")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => return Err(Usage("give the password with --password-stdin".into()).into()),
    };
    // as Docker's "Password Required", before any connection
    if password.is_empty() {
        anyhow::bail!(
            "login to {}: password required (it was empty)",
            safe(&registry)
        );
    }
    let client = a.registry.client();
    client.set_secret(
        &registry,
        Secret::Password {
            username: username.clone(),
            password: password.clone(),
        },
    );
    client.ping(&registry)?;
    let file = creds::strata_auth_file()
        .context("no home directory to keep credentials in ($HOME, $XDG_CONFIG_HOME)")?;
    creds::save(&file, &registry, &username, &password)?;
    println!("Login Succeeded");
    Ok(())
}

/// `strata logout`
pub fn logout(a: &LogoutArgs) -> Result<()> {
    let registry = server(&a.server);
    let file = creds::strata_auth_file().context("no home directory ($HOME, $XDG_CONFIG_HOME)")?;
    if creds::forget(&file, &registry)? {
        println!("Removing login credentials for {}", safe(&registry));
    } else {
        println!("Not logged in to {}", safe(&registry));
    }
    Ok(())
}
