//! Small servers the registry tests start on loopback: a token server for
//! docker-registry's token authentication (JWTs signed with a key made by
//! openssl, answering both GET and the OAuth2 POST flow), and an HTTP proxy
//! in front of a registry that corrupts or cuts one blob's bytes and counts
//! what it serves.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// A request head: method, path, headers (lower-case names).
pub struct Head {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

fn read_head(r: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Head {
        method,
        path,
        headers,
    })
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A token server; docker-registry trusts `cert` (its `rootcertbundle`).
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    pub gets: Arc<AtomicUsize>,
    pub posts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

pub const SERVICE: &str = "strata-test-registry";
pub const ISSUER: &str = "strata-test-issuer";

impl TokenServer {
    /// Start one accepting `user`:`password` (GET with Basic, POST with the
    /// password grant) and `refresh` (POST with the refresh-token grant).
    pub fn start(dir: &Path, user: &str, password: &str, refresh: &str) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=strata-test-token",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        let der = openssl(&["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"]);
        let x5c = STANDARD.encode(der);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let (gets, posts, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (g, p, st) = (gets.clone(), posts.clone(), stop.clone());
        let (user, password, refresh) =
            (user.to_string(), password.to_string(), refresh.to_string());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        serve_token(s, &key, &x5c, &user, &password, &refresh, &g, &p);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        TokenServer {
            port,
            cert,
            gets,
            posts,
            stop,
        }
    }

    /// The registry config's `auth:` section for this server.
    pub fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.port,
            self.cert.display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.replace('+', " ");
    let b = b.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[allow(clippy::too_many_arguments)]
fn serve_token(
    s: TcpStream,
    key: &Path,
    x5c: &str,
    user: &str,
    password: &str,
    refresh: &str,
    gets: &AtomicUsize,
    posts: &AtomicUsize,
) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let Some(h) = read_head(&mut r) else { return };
    let mut s = s;
    let (path, q) = h.path.split_once('?').unwrap_or((&h.path, ""));
    if path != "/token" {
        return respond(&mut s, "404 Not Found", "text/plain", b"");
    }
    let (params, ok) = if h.method == "POST" {
        posts.fetch_add(1, Ordering::Relaxed);
        let n: usize = h
            .headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; n];
        let _ = r.read_exact(&mut body);
        let p = query(&String::from_utf8_lossy(&body));
        let get = |k: &str| {
            p.iter()
                .find(|(a, _)| a == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let ok = match get("grant_type").as_str() {
            "password" => get("username") == user && get("password") == password,
            "refresh_token" => get("refresh_token") == refresh,
            _ => false,
        };
        (p, ok)
    } else {
        gets.fetch_add(1, Ordering::Relaxed);
        let want = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        (query(q), h.headers.get("authorization") == Some(&want))
    };
    if !ok {
        return respond(
            &mut s,
            "401 Unauthorized",
            "application/json",
            br#"{"details":"bad credentials"}"#,
        );
    }
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|sc| {
            let mut p = sc.splitn(3, ':');
            let (t, n, a) = (p.next()?, p.next()?, p.next()?);
            Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", gets.load(Ordering::Relaxed) + posts.load(Ordering::Relaxed)), "access": access,
    });
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut c = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", key.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(signing.as_bytes())
        .unwrap();
    let sig = c.wait_with_output().unwrap().stdout;
    let jwt = format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig));
    let body = if h.method == "POST" {
        serde_json::json!({"access_token": jwt, "expires_in": 300, "refresh_token": refresh})
    } else {
        serde_json::json!({"token": jwt, "expires_in": 300})
    };
    respond(
        &mut s,
        "200 OK",
        "application/json",
        body.to_string().as_bytes(),
    );
}

/// What the proxy does to the blob it watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass everything through.
    Pass,
    /// Flip one byte of the blob in every response.
    Corrupt,
    /// Close the first full response after this many bytes of the blob.
    CutOnce(u64),
    /// Send the blob slowly (this many bytes per 10 ms).
    Slow(usize),
    /// Answer the blob's GET with a redirect to 127.0.0.1:PORT (blob
    /// storage elsewhere).
    RedirectTo(u16),
}

/// An HTTP proxy in front of a registry.
pub struct Proxy {
    pub port: u16,
    /// Bytes of the watched blob sent, over every response.
    pub sent: Arc<AtomicU64>,
    /// Requests for the watched blob, and those that asked for a range.
    pub requests: Arc<AtomicUsize>,
    pub ranged: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Forward to 127.0.0.1:`upstream`, doing `mode` to blob `digest`.
    pub fn start(upstream: u16, digest: &str, mode: Mode) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let ranged = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cut_done = Arc::new(Mutex::new(false));
        let watch = format!("/blobs/{digest}");
        let (s2, r2, g2, st2) = (sent.clone(), requests.clone(), ranged.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let (s3, r3, g3, cd, w) = (
                            s2.clone(),
                            r2.clone(),
                            g2.clone(),
                            cut_done.clone(),
                            watch.clone(),
                        );
                        std::thread::spawn(move || {
                            forward(c, upstream, &w, mode, &s3, &r3, &g3, &cd)
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            sent,
            requests,
            ranged,
            stop,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    c: TcpStream,
    upstream: u16,
    watch: &str,
    mode: Mode,
    sent: &AtomicU64,
    requests: &AtomicUsize,
    ranged: &AtomicUsize,
    cut_done: &Mutex<bool>,
) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut c = c;
    let Some(h) = read_head(&mut r) else { return };
    let n: usize = h
        .headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; n];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let mut req = format!("{} {} HTTP/1.1\r\n", h.method, h.path);
    for (k, v) in &h.headers {
        if k != "connection" && k != "host" {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str(&format!(
        "host: 127.0.0.1:{upstream}\r\nconnection: close\r\n\r\n"
    ));
    if up
        .write_all(req.as_bytes())
        .and_then(|()| up.write_all(&body))
        .is_err()
    {
        return;
    }
    let watched = h.method == "GET" && h.path.contains(watch);
    if let (true, Mode::RedirectTo(port)) = (watched, mode) {
        requests.fetch_add(1, Ordering::Relaxed);
        let digest = watch.trim_start_matches("/blobs/");
        let _ = write!(
            c,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}/storage/{digest}?signed=1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    if watched {
        requests.fetch_add(1, Ordering::Relaxed);
        if h.headers.contains_key("range") {
            ranged.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut ur = BufReader::new(up);
    // the response head, passed on with `Connection: close`
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if ur.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    if c.write_all(head.as_bytes()).is_err() {
        return;
    }
    let is_blob = watched && head.starts_with("HTTP/1.1 20");
    let cut = match mode {
        Mode::CutOnce(n) if is_blob && !h.headers.contains_key("range") => {
            let mut d = cut_done.lock().unwrap();
            let first = !*d;
            *d = true;
            first.then_some(n)
        }
        _ => None,
    };
    let mut buf = vec![
        0u8;
        match mode {
            Mode::Slow(k) => k,
            _ => 64 << 10,
        }
    ];
    let mut pos = 0u64;
    loop {
        let k = match ur.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => k,
        };
        let mut chunk = buf[..k].to_vec();
        if is_blob {
            if mode == Mode::Corrupt && pos <= 100 && pos + k as u64 > 100 {
                chunk[(100 - pos) as usize] ^= 0xff;
            }
            if let Some(limit) = cut
                && pos + k as u64 >= limit
            {
                let keep = (limit - pos) as usize;
                let _ = c.write_all(&chunk[..keep]);
                sent.fetch_add(keep as u64, Ordering::Relaxed);
                let _ = c.shutdown(std::net::Shutdown::Both);
                return;
            }
            sent.fetch_add(k as u64, Ordering::Relaxed);
            if let Mode::Slow(_) = mode {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        pos += k as u64;
        if c.write_all(&chunk).is_err() {
            return;
        }
    }
}

/// "Blob storage": serves fixed blobs at /storage/DIGEST and remembers
/// whether any request carried an `Authorization` header.
pub struct BlobStore {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    pub saw_authorization: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl BlobStore {
    pub fn start(blobs: HashMap<String, Vec<u8>>) -> BlobStore {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let (hits, saw, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (h2, s2, st2) = (hits.clone(), saw.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let mut r = BufReader::new(c.try_clone().unwrap());
                        let mut c = c;
                        let Some(h) = read_head(&mut r) else { continue };
                        h2.fetch_add(1, Ordering::Relaxed);
                        if h.headers.contains_key("authorization") {
                            s2.store(true, Ordering::Relaxed);
                        }
                        let d = h
                            .path
                            .trim_start_matches("/storage/")
                            .split('?')
                            .next()
                            .unwrap_or("")
                            .to_string();
                        match blobs.get(&d) {
                            Some(b) => respond(&mut c, "200 OK", "application/octet-stream", b),
                            None => respond(&mut c, "404 Not Found", "text/plain", b""),
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        BlobStore {
            port,
            hits,
            saw_authorization: saw,
            stop,
        }
    }
}

impl Drop for BlobStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
